# A student distilled from the teacher (docs/method.md, "Layer reduction", "Knowledge distillation",
# "Quantization"): step 1, the layer-reduced full-precision student (wbits~fp), and step 2, the 1/2-bit student
# with 8-bit activations, from the teacher or from a step-1 student (init).


rule distill:
    input:
        teacher=teacher_inputs,
        init=init_inputs,
        train_file=train_file_inputs,
    output:
        f"{RUN}/metrics.json",
    log:
        f"results/logs/{RUN.removeprefix('results/')}/distill.log",
    benchmark:
        f"results/benchmarks/{RUN.removeprefix('results/')}/distill.tsv"
    priority: step1_first  # step-1 students unblock the reduced quantized runs
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
        device=JOBS.device(),
        out=output_dir,
        label=job_label,
    shell:
        "OMP_NUM_THREADS={threads} xtc distill {params.student} --task {wildcards.task} {params.train} "
        "--epochs {wildcards.epochs} --lr {wildcards.lr} --seed {wildcards.seed} --device {params.device} "
        "--out {params.out} "
        "2>&1 | tee {log} | sed -u 's|^|[{params.label}] |'"
