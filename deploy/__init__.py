"""Deployment: registry (MLflow), loading + sampling, HTTP serving, ONNX/TorchScript export.

Imports only ``training.networks`` from ganforge (never the trainer, Accelerate or DeepSpeed).
Entry points: ``deploy.registry.register_export``, ``deploy.generator.load_generator``,
``deploy.serve.GeneratorServer`` (on ``deploy.service.create_app``, which other endpoints
plug into), ``deploy.export.export_generator``. Submodules are imported
on use so ``import deploy`` stays cheap (MLflow is only loaded by the registry paths).
"""
