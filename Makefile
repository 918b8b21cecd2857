# CCG AutoPackaging: every target does its own set-up and is safe to re-run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := qgis python3-qgis qgis-providers libsqlite3-mod-spatialite xvfb xauth python3-venv \
	python3-mock python3-rasterio python3-geopandas python3-fiona python3-shapely python3-rtree \
	python3-requests gdal-bin redis-server
PIP_PACKAGES := huey sqlite-utils fastapi uvicorn httptools uvloop httpx redis "frictionless>=5,<6" pytest pytest-qt pytest-qgis schemathesis
export QT_QPA_PLATFORM ?= offscreen
export PROJ_DATA ?= /usr/share/proj

.PHONY: install system-packages sample-sources run test soak bench plugin-zip plugin-dev-install qgis screenshot clean

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

# Without a configured mirror, `make run` serves from a small offline sample mirror (see README).
DATA_DIR := $(or $(CCGAUTOPKG_DATA_DIR),$(or $(XDG_DATA_HOME),$(HOME)/.local/share)/ccg-autopkg)
SAMPLE_SOURCES ?= $(DATA_DIR)/sample-sources

sample-sources: install
	test -f "$(SAMPLE_SOURCES)/SYNTHETIC.json" || $(PY) -m processors.samples "$(SAMPLE_SOURCES)"

run: install plugin-dev-install
	@if [ -z "$$CCGAUTOPKG_SOURCE_MIRROR" ]; then $(MAKE) -s sample-sources; fi
	CCGAUTOPKG_SOURCE_MIRROR="$${CCGAUTOPKG_SOURCE_MIRROR:-$(SAMPLE_SOURCES)}" $(VENV)/bin/autopkg serve

# Development install into the user's QGIS profile: a plugin folder whose entries link to
# qgis_plugin/ and the top-level metadata.txt (QGIS needs it inside the folder), enabled in QGIS3.ini.
QGIS_PROFILE ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
plugin-dev-install:
	mkdir -p $(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME) $(QGIS_PROFILE)/QGIS
	for entry in qgis_plugin/*; do ln -sfn "$(CURDIR)/$$entry" "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME)/"; done
	ln -sfn "$(CURDIR)/metadata.txt" "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME)/metadata.txt"
	QT_QPA_PLATFORM=offscreen /usr/bin/python3 -c "from PyQt5.QtCore import QSettings; s = QSettings('$(QGIS_PROFILE)/QGIS/QGIS3.ini', QSettings.IniFormat); s.setValue('PythonPlugins/$(PLUGIN_NAME)', True); s.sync()"

screenshot: install
	docs/make_screenshot.sh

qgis: install plugin-dev-install
	qgis --noversioncheck

# The plugin tests need pytest-qgis (a QGIS application per process); the rest run without it.
test: install
	$(PY) -m pytest -q --ignore=tests/plugin
	@if [ -d tests/plugin ]; then $(PY) -m pytest -q -o addopts=-ra tests/plugin; fi

# The long variants of tests/reliability: more fuzzing, 20 identical submissions, 30 jobs over 10
# boundaries on SQLite and Redis, figures printed (liveness, timings).
soak: install
	CCGAUTOPKG_FUZZ_EXAMPLES=300 CCGAUTOPKG_SOAK_IDENTICAL=20 CCGAUTOPKG_SOAK_JOBS=30 $(PY) -m pytest -q -s -o addopts="-p no:qgis -rA" tests/reliability

bench: install
	$(PY) bench/bench_boundaries.py
	$(PY) bench/bench_jobs.py
	$(PY) bench/bench_processors.py
	QT_QPA_PLATFORM=offscreen $(PY) bench/bench_plugin_gui.py

# QGIS's "Install from ZIP" wants one top-level folder holding the plugin and its metadata.txt.
PLUGIN_NAME := ccg_autopkg
plugin-zip:
	rm -rf build/plugin && mkdir -p build/plugin/$(PLUGIN_NAME) dist
	cp -r qgis_plugin/. build/plugin/$(PLUGIN_NAME)/
	cp metadata.txt build/plugin/$(PLUGIN_NAME)/
	find build/plugin -name __pycache__ -prune -exec rm -rf {} +
	rm -f dist/$(PLUGIN_NAME).zip
	cd build/plugin && /usr/bin/python3 -m zipfile -c ../../dist/$(PLUGIN_NAME).zip $(PLUGIN_NAME)
	@echo "dist/$(PLUGIN_NAME).zip"

clean:
	rm -rf $(VENV) build dist *.egg-info
