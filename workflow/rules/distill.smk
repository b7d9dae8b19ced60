# A student distilled from the teacher (docs/method.md, "Layer reduction", "Knowledge distillation",
# "Quantization"): step 1, the layer-reduced full-precision student (wbits~fp), and step 2, the 1/2-bit student
# with 8-bit activations, from the teacher or from a step-1 student (init).


rule distill:
    input:
        teacher=JOBS.teacher_input,
        init=JOBS.init_input,
        train_file=JOBS.train_file_input,
    output:
        f"{RUN}/metrics.json",
    log:
        f"results/logs/{RUN.removeprefix('results/')}/distill.log",
    benchmark:
        f"results/benchmarks/{RUN.removeprefix('results/')}/distill.tsv"
    priority: JOBS.priority  # step-1 students unblock the reduced quantized runs
    conda:
        "../envs/xtc.yaml"
    threads: SETTINGS["resources"]["threads"]
    resources:
        gpu=SETTINGS["resources"]["gpu"],
        mem_mb=SETTINGS["resources"]["mem_mb"],
        runtime=JOBS.run_minutes,
    params:
        student=JOBS.student_args,
        train=JOBS.train_args,
        device=JOBS.device(),
        out=output_dir,
        label=JOBS.job_label,
    shell:
        "OMP_NUM_THREADS={threads} xtc distill {params.student} --task {wildcards.task} {params.train} "
        "--epochs {wildcards.epochs} --lr {wildcards.lr} --seed {wildcards.seed} --device {params.device} "
        "--out {params.out} "
        "2>&1 | tee {log} | sed -u 's|^|[{params.label}] |'"
