"""Shared test helpers: torch-only reference networks (reference.py), the max_pool2d case grid (pool_cases.py),
generated image folders (image_folders.py), and the scripts some tests run as subprocesses (train_script.py,
fuzz_cases.py). conftest.py holds the conv2d case grid and the fixtures."""
