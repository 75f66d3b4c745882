# The two commands a newcomer runs (see README): `make run` (set up, then the main job) and `make test`.
PYTHON ?= python3
ARGS ?=

.PHONY: setup run test demo bench

setup:
	$(PYTHON) -m pip install torch==2.13.0 numpy tqdm matplotlib pytest ninja expecttest
	$(PYTHON) -m pip install --no-build-isolation --no-deps -e .

run: setup
	$(PYTHON) examples/finetune_resnet.py $(ARGS)

test: setup
	$(PYTHON) -m pytest -q tests

demo: setup
	$(PYTHON) examples/conv_demo.py

bench: setup
	$(PYTHON) benchmarks/compare.py $(ARGS)
