# Two entry points for a fresh machine: `make demo` and `make test`.
# Both build the virtual environment first (Python 3.11, packages, libusb).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/demo
WEB    := mobile_derm/app/web

.PHONY: demo test venv syslibs chromium clean

demo: $(VENV)/.installed
	$(BIN)/mobile-derm demo --out $(OUT)

test: $(VENV)/.installed $(WEB)/node_modules/.installed chromium
	$(BIN)/python -m pytest

venv: $(VENV)/.installed

# tflite-support's metadata extension links libusb-1.0.so.0.
syslibs:
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing libusb-1.0-0 (needed by tflite-support)"; \
	    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq libusb-1.0-0 >/dev/null)) || \
	     { echo "error: could not install libusb-1.0-0; install it with your package manager"; exit 1; }; \
	  else \
	    echo "error: libusb-1.0.so.0 is missing; run: sudo apt-get install libusb-1.0-0 (Debian/Ubuntu) or your system's equivalent"; exit 1; \
	  fi; \
	fi

# The web app's runtime (LiteRT.js) at the versions package-lock.json pins; web-app copies it into sites.
$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: npm not found; install Node.js 20 or newer (e.g. apt-get install nodejs npm)"; exit 1; }
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser tests drive Debian's Chromium through Playwright, which downloads no browser.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && [ -z "$$MOBILE_DERM_CHROMIUM" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (for the browser tests)"; \
	    (apt-get install -y -qq chromium >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null)) || \
	     { echo "error: could not install chromium; install it with your package manager"; exit 1; }; \
	  else \
	    echo "error: chromium is missing; run: sudo apt-get install chromium (Debian/Ubuntu), or set MOBILE_DERM_CHROMIUM to a Chromium binary"; exit 1; \
	  fi; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml | syslibs
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 (e.g. 'uv python install 3.11' or 'apt-get install python3.11') or run make PYTHON=/path/to/python3.11"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: $(PYTHON) is not Python 3.11 (tflite-support has no wheel for newer Pythons); install 3.11, e.g. 'uv python install 3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[weights,test]'
	@# Another package may drag in the GUI opencv-python; two cv2 distributions break cv2.
	@$(BIN)/python -m pip show -q opencv-python >/dev/null 2>&1 && $(BIN)/python -m pip uninstall -y -q opencv-python || true
	$(BIN)/python -c 'import cv2, ai_edge_litert, mobile_derm_export, mobile_derm_quality, mobile_derm.tf_setup; from tensorflow_lite_support.metadata.python import metadata'
	touch $@

clean:
	rm -rf $(VENV) runs
