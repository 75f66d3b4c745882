# The two commands a newcomer runs (see README): `make run` (set up, then the main job) and `make test`.
PYTHON ?= python3
ARGS ?=

.PHONY: setup run test demo bench

# Installs the requirements and builds fastconv, unless a build by this Python is newer than every source (the
# stamp lives in build/, which a fresh clone lacks) and `import fastconv` from elsewhere still finds this
# checkout's build; `make setup FORCE=1` rebuilds anyway.
STAMP := build/.installed-$(subst /,_,$(PYTHON))
setup:
	@if [ -z "$(FORCE)" ] && [ -f "$(STAMP)" ] && [ -z "$$(find csrc setup.py pyproject.toml -newer "$(STAMP)" | head -1)" ] \
		&& (cd / && $(PYTHON) -c "import os, sys, fastconv._C; sys.exit(os.path.realpath(fastconv._C.__file__) != os.path.realpath('$(CURDIR)/fastconv/' + os.path.basename(fastconv._C.__file__)))") 2>/dev/null; then \
		echo "fastconv is built and up to date (make setup FORCE=1 rebuilds)"; \
	else \
		$(PYTHON) -m pip install torch==2.13.0 numpy tqdm matplotlib Pillow pytest ninja expecttest && \
		$(PYTHON) -m pip install --no-build-isolation --no-deps -e . && mkdir -p build && touch "$(STAMP)"; \
	fi

# With a CUDA GPU: the ResNet-18 fine-tune. On a CPU: the fast recipe (90.75% on the JPEG copy of CIFAR-10 in 20-31
# minutes of training on 2 Zen 3 cores, as fast as the VM's hour allows; README "Accuracy (measured)").
run: setup
	@if $(PYTHON) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
		echo "CUDA found: $(PYTHON) examples/finetune_resnet.py $(ARGS)"; $(PYTHON) examples/finetune_resnet.py $(ARGS); \
	else \
		echo "no CUDA GPU: $(PYTHON) examples/train_cifar_fast.py $(ARGS)"; $(PYTHON) examples/train_cifar_fast.py $(ARGS); \
	fi

test: setup
	$(PYTHON) -m pytest -q tests

demo: setup
	$(PYTHON) examples/conv_demo.py

bench: setup
	$(PYTHON) benchmarks/compare.py $(ARGS)
