"""Model architectures, the model bundle and the batched five-model inference engine.

Nothing heavy is imported here: import the submodules you need
(``models.preprocess``, ``models.architectures``, ``models.bundle``, ``models.engine``).
"""

MODEL_NAMES: tuple[str, ...] = ("resnet50", "vgg16", "custom_cnn", "svm", "random_forest")
NETWORK_NAMES: tuple[str, ...] = ("resnet50", "vgg16", "custom_cnn")
ESTIMATOR_NAMES: tuple[str, ...] = ("svm", "random_forest")
ENSEMBLE_NAME = "ensemble"
