# make demo / make test: create .venv if missing, install afx into it once, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.afx-installed

.PHONY: demo test install clean-venv

demo: $(STAMP)
	mkdir -p out
	$(BIN)/afx master examples/mix_unmastered.flac --ref examples/music_mastered.flac -o out/mix_mastered.flac --report out/mix_mastered.json
	$(BIN)/afx render examples/mix_unmastered.flac --preset presets/master_gentle.json -o out/mix_gentle_master.flac
	$(BIN)/afx info examples/mix_unmastered.flac out/mix_mastered.flac out/mix_gentle_master.flac

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so pip takes the local CPU wheel instead of resolving a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

clean-venv:
	rm -rf $(VENV)
