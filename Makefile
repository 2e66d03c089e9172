# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch is pinned where this project is tested (x86_64 CPU machines take it from local disk);
# override with `make TORCH_SPEC="torch torchvision" ...` elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install browser dicom-tools demo test test-quick lint bench docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	# Meta's sam2 (the optional sam2 backbone) is an sdist: build it against the torch above, and
	# without its CUDA extension (SAM 2 skips the hole filling that needs it)
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-build-isolation 'sam2>=1.1.0'
	$(BIN)/python -m pip install --quiet -e '.[dev,sam2,ray,serve]'
	# the tests drive the MONAI Label API with MONAI Label's own client: its package alone (its
	# server's dependencies, MONAI and a pinned torch among them, are not needed for the client)
	$(BIN)/python -m pip install --quiet --no-deps 'monailabel==0.8.5'
	touch $@

install: $(BIN)/.installed

# the web viewer's tests drive Debian's Chromium through Playwright (never `playwright install`:
# it downloads a browser build); apt-get needs root, or sudo where there is one
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium > /dev/null; \
	fi
	@/usr/bin/chromium --version

# the DICOM tests run a real PACS (Orthanc with its DICOMweb plugin) on a loopback port and check
# the written SEG and RT-STRUCT with dicom3tools' dciodvfy; where the package starts its own Orthanc
# service it is stopped again (the tests start theirs)
dicom-tools:
	@if [ ! -x /usr/sbin/Orthanc ] || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ ! -x /usr/bin/dciodvfy ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq orthanc orthanc-dicomweb dicom3tools > /dev/null; \
		$$SUDO service orthanc stop > /dev/null 2>&1 || true; \
	fi
	@/usr/sbin/Orthanc --version | head -n 1
	@ls /usr/bin/dciodvfy

demo: install
	$(BIN)/medsam2 demo --output-dir medsam2_demo --overwrite

test: install browser dicom-tools
	@# the CPU flags and the precision `--precision auto` picks: a failure can be read from the log alone
	@$(BIN)/medsam2 models | tail -n 1
	@# the packages' arrows point down only (the layers contract in pyproject.toml)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# the quick check while working: the tests that load no model (under two minutes on 2 cores)
test-quick: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/propagate.py

# the user guide (docs/, mkdocs.yml) as a website in site/; --strict fails on a broken link or anchor
docs: install
	$(BIN)/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) medsam2_demo .pytest_cache site
