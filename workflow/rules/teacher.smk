# The task teacher: fine-tuned here from teacher.model, or a given fine-tuned model that is only evaluated.


rule finetune_teacher:
    output:
        f"{TEACHER}/metrics.json",
    log:
        "results/logs/teachers/task~{task}/seed~{seed}/finetune.log",
    benchmark:
        "results/benchmarks/teachers/task~{task}/seed~{seed}/finetune.tsv"
    conda:
        "../envs/xtc.yaml"
    threads: JOBS.teacher_threads
    resources:
        gpu=SETTINGS["resources"]["gpu"],
        mem_mb=SETTINGS["resources"]["mem_mb"],
        runtime=JOBS.teacher_minutes,
    params:
        recipe=JOBS.teacher_args,
        device=JOBS.device(),
        train=JOBS.train_args,
        out=output_dir,
        label=JOBS.job_label,
    shell:
        "OMP_NUM_THREADS={threads} xtc finetune {params.recipe} --task {wildcards.task} {params.train} "
        "--seed {wildcards.seed} --device {params.device} --out {params.out} "
        "2>&1 | tee {log} | sed -u 's|^|[{params.label}] |'"


rule evaluate_given_teacher:
    output:
        f"{GIVEN_TEACHER}/metrics.json",
    log:
        "results/logs/teachers/task~{task}/given/evaluate.log",
    benchmark:
        "results/benchmarks/teachers/task~{task}/given/evaluate.tsv"
    conda:
        "../envs/xtc.yaml"
    threads: SETTINGS["resources"]["threads"]
    resources:
        gpu=SETTINGS["resources"]["gpu"],
        mem_mb=SETTINGS["resources"]["mem_mb_small"],
        runtime=JOBS.small_minutes,
    params:
        model=JOBS.given_teacher_args,
        data=JOBS.data_args(),
        device=JOBS.device(),
        out=output_dir,
    shell:
        "OMP_NUM_THREADS={threads} xtc evaluate {params.model} --task {wildcards.task} {params.data} "
        "--device {params.device} --out {params.out} > {log} 2>&1"
