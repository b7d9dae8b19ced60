# TinyBERT data augmentation of a task's train split (runs with da=1 train on it).


rule augment:
    output:
        AUGMENTED,
    log:
        "results/logs/data/task~{task}/augment.log",
    benchmark:
        "results/benchmarks/data/task~{task}/augment.tsv"
    conda:
        "../envs/xtc.yaml"
    threads: SETTINGS["resources"]["threads"]
    resources:
        gpu=SETTINGS["resources"]["gpu"],
        mem_mb=SETTINGS["resources"]["mem_mb"],
        runtime=JOBS.augment_minutes,
    params:
        args=JOBS.augment_args,
        device=JOBS.device(),
    shell:
        "OMP_NUM_THREADS={threads} xtc augment --task {wildcards.task} {params.args} --device {params.device} "
        "--out {output} > {log} 2>&1"
