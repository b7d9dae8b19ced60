# Step 1: the layer-reduced full-precision student, distilled from the teacher (reference sections 1 and 3).


rule reduce:
    input:
        teacher=teacher_inputs,
        train_file=train_file_inputs,
    output:
        f"{STEP1}/metrics.json",
    log:
        f"results/logs/{STEP1.removeprefix('results/')}/distill.log",
    benchmark:
        f"results/benchmarks/{STEP1.removeprefix('results/')}/distill.tsv"
    priority: 1  # step-1 students unblock the reduced quantized runs
    conda:
        "../envs/xtc.yaml"
    threads: SETTINGS["resources"]["threads"]
    resources:
        gpu=SETTINGS["resources"]["gpu"],
        mem_mb=SETTINGS["resources"]["mem_mb"],
        runtime=run_runtime,
    params:
        student=student_args,
        train=train_args,
        out=output_dir,
        label=job_label,
    shell:
        "OMP_NUM_THREADS={threads} xtc distill {params.student} --task {wildcards.task} {params.train} "
        "--epochs {wildcards.epochs} --lr {wildcards.lr} --seed {wildcards.seed} --out {params.out} "
        "2>&1 | tee {log} | sed -u 's|^|[{params.label}] |'"
