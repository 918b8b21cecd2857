# CCG AutoPackaging: every target does its own set-up and is safe to re-run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := qgis python3-qgis qgis-providers libsqlite3-mod-spatialite xvfb xauth python3-venv \
	python3-mock python3-rasterio python3-geopandas python3-fiona python3-shapely python3-rtree \
	python3-requests gdal-bin redis-server
PIP_PACKAGES := huey sqlite-utils fastapi uvicorn httpx redis "frictionless>=5,<6" pytest pytest-qt pytest-qgis
export QT_QPA_PLATFORM ?= offscreen
export PROJ_DATA ?= /usr/share/proj

.PHONY: install system-packages run test bench plugin-zip clean

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "Missing Debian packages: $$missing"; \
			echo "Run as root: apt-get install -y --no-install-recommends $$missing"; exit 1; \
		fi; \
		echo "Installing Debian packages: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The venv sees Debian's geo stack (one GDAL per process) and adds only pure-Python parts;
# --no-deps on our own package keeps pip from replacing Debian's numpy/shapely/rasterio.
$(VENV)/.installed: pyproject.toml Makefile | system-packages
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(PIP_PACKAGES)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

install: system-packages $(VENV)/.installed

run: install
	$(VENV)/bin/autopkg serve

# The plugin tests need pytest-qgis (a QGIS application per process); the rest run without it.
test: install
	$(PY) -m pytest -q --ignore=tests/plugin
	@if [ -d tests/plugin ]; then $(PY) -m pytest -q -o addopts=-ra tests/plugin; fi

bench: install
	$(PY) bench/bench_boundaries.py
	$(PY) bench/bench_jobs.py

plugin-zip:
	@echo "plugin-zip: filled by the QGIS plugin issue"; exit 1

clean:
	rm -rf $(VENV) build *.egg-info
