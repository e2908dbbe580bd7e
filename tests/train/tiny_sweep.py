"""The sweep tests' config: ``demo_sweep`` on a tiny generated set, three trials one at a
time (the paper's weights; learning rates 0.002, 1e-9, 1e-9: the two that cannot learn are
stopped by ASHA at their first validation on any machine)."""

TINY = ["generate.coco_train=32", "generate.mpii_train=32", "generate.coco_val=4",
        "generate.mpii_val=4", "optim.batch_size=8", "optim.epochs=2", "optim.warmup_steps=2",
        "run.val_every_epochs=1", "run.val_flip_test=false",
        "teacher_cache.views=2", "teacher_cache.batch_size=16",
        "sweep.search=grid", "sweep.grid=[[0.45,0.25,0.45]]", "sweep.lr=[0.002,1e-9,1e-9]",
        "sweep.num_samples=1", "sweep.max_concurrent_trials=1", "sweep.sizes=[t]"]
