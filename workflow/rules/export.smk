# The truly packed checkpoint with its size accounting, and the dev metrics of the packed model itself.


rule export:
    input:
        f"{RUN}/metrics.json",
    output:
        size=f"{RUN}/packed/size.json",
        model=f"{RUN}/packed/model.xtc.safetensors",
    log:
        f"results/logs/{RUN.removeprefix('results/')}/export.log",
    benchmark:
        f"results/benchmarks/{RUN.removeprefix('results/')}/export.tsv"
    wildcard_constraints:
        wbits="|".join(map(str, study.QUANTIZED_WBITS)),
    conda:
        "../envs/xtc.yaml"
    threads: 1
    resources:
        mem_mb=SETTINGS["resources"]["mem_mb_small"],
        runtime=JOBS.small_minutes,
    params:
        run=input_dir,
        out=output_dir,
    shell:
        "OMP_NUM_THREADS={threads} xtc export --model {params.run} --out {params.out} > {log} 2>&1"


rule evaluate_packed:
    input:
        f"{RUN}/packed/model.xtc.safetensors",
    output:
        f"{RUN}/packed_eval/metrics.json",
    log:
        f"results/logs/{RUN.removeprefix('results/')}/evaluate_packed.log",
    benchmark:
        f"results/benchmarks/{RUN.removeprefix('results/')}/evaluate_packed.tsv"
    wildcard_constraints:
        wbits="|".join(map(str, study.QUANTIZED_WBITS)),
    conda:
        "../envs/xtc.yaml"
    threads: SETTINGS["resources"]["threads"]
    resources:
        mem_mb=SETTINGS["resources"]["mem_mb_small"],
        runtime=JOBS.small_minutes,
    params:
        data=JOBS.data_args(),
        out=output_dir,
    shell:
        "OMP_NUM_THREADS={threads} xtc evaluate --model {input} --engine int8 --task {wildcards.task} {params.data} "
        "--out {params.out} > {log} 2>&1"


# One job per study: its packed students on the integer engine against the FP32 teachers (speed-up, memory), on
# CPU (no GPU). Machine-dependent figures, so kept out of the study's tables (xtc/packed/serving.py).
rule serving_report:
    input:
        JOBS.serving_inputs,
    output:
        json="results/serving/{study}.json",
        md="results/serving/{study}.md",
    log:
        "results/logs/{study}/serving_report.log",
    benchmark:
        "results/benchmarks/{study}/serving_report.tsv"
    conda:
        "../envs/xtc.yaml"
    threads: SETTINGS["resources"]["threads"]
    resources:
        mem_mb=SETTINGS["resources"]["mem_mb"],
        runtime=JOBS.small_minutes,
    params:
        plan=JOBS.serving_plan,
        batch=SETTINGS["data"]["batch_size"],
        seq=SETTINGS["data"]["max_seq_length"],
    script:
        "../scripts/serving_report.py"
