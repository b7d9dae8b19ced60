# Local rules: the runs table of each study (the interface with the reporting code), its tables and figures,
# the scores DVC shows, and the index of everything trained (index_trained, DVC's `train` stage target).


localrules:
    all,
    index_trained,
    runs_table,


rule runs_table:
    input:
        metrics=JOBS.study_metrics,
        sizes=JOBS.study_sizes,
    output:
        runs="results/{study}/runs.tsv",
        scores="results/scores/{study}.json",
    log:
        "results/logs/{study}/runs_table.log",
    conda:
        "../envs/xtc.yaml"
    params:
        rows=JOBS.study_table,
    script:
        "../scripts/runs_table.py"


for _study in STUDIES:
    _name = _study["study"]
    _kinds = _study["report"]["figures"]

    rule:
        name:
            f"aggregate_{_name.replace('-', '_')}"
        input:
            runs=f"results/{_name}/runs.tsv",
            metrics=JOBS.study_metrics(_name),
            sizes=JOBS.study_sizes(_name),
        output:
            md=report(
                f"results/tables/{_name}.md",
                caption="../report/table.rst",
                category="Tables",
                subcategory=_name,
            ),
            tex=f"results/tables/{_name}.tex",
            csv=report(
                f"results/tables/{_name}.csv",
                caption="../report/table.rst",
                category="Tables",
                subcategory=_name,
            ),
            figures=[
                report(
                    f"figures/{_name}_{kind}.{ext}",
                    caption=f"../report/{kind}.rst",
                    category="Figures",
                    subcategory=_name,
                )
                for kind in _kinds
                for ext in ("png", "pdf")
            ],
        log:
            f"results/logs/{_name}/aggregate.log",
        localrule: True
        conda:
            "../envs/xtc.yaml"
        params:
            study=_name,
            paper=_study["report"]["paper"],
            figures=_kinds,
        script:
            "../scripts/aggregate.py"


rule index_trained:
    input:
        JOBS.teacher_metrics(),
        JOBS.run_files("metrics.json"),
        JOBS.run_files("packed/size.json", quantized_only=True),
        JOBS.run_files("packed_eval/metrics.json", quantized_only=True),
    output:
        runs="results/runs/index.tsv",
        teachers="results/teachers/index.tsv",
        data="results/data/index.tsv",
    log:
        "results/logs/index_trained.log",
    conda:
        "../envs/xtc.yaml"
    params:
        runs=sorted(JOBS.runs),
        teachers=JOBS.teacher_metrics(),
        data=JOBS.augmented(),
    script:
        "../scripts/index_trained.py"
