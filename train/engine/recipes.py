"""Named training recipes: the hyper-parameters of pytorch-classification's CIFAR trainings.

Source: bearpaw/pytorch-classification, TRAINING.md (the commands behind its README's CIFAR table,
``train/reference/cifar_bearpaw_readme.csv``; ``cifar_published.csv``, the project brief's table, names a recipe
per row). All use SGD, lr 0.1, momentum 0.9, multi-step decay.
Precedence is defaults < recipe < command-line flags: a recipe only fills in what the user left unset.
Keys are ``TrainConfig``/``DataConfig`` field names; ``train.engine.config`` rejects any other key.
"""

_CIFAR_SGD = {"dataset": "cifar10", "lr": 0.1, "momentum": 0.9, "schedule": "multistep"}

RECIPES: dict[str, dict] = {
    # ResNet-110 row: 164 epochs, lr / 10 at 81 and 122. Also the recipe of the preresnet rows.
    "resnet-110": {
        **_CIFAR_SGD, "arch": "resnet-110", "epochs": 164, "milestones": (81, 122), "gamma": 0.1,
        "weight_decay": 1e-4, "batch_size": 128,
    },
    # WRN-28-10, dropout 0.3: 200 epochs, lr x 0.2 at 60, 120, 160.
    "wrn-28-10": {
        **_CIFAR_SGD, "arch": "wrn-28-10", "epochs": 200, "milestones": (60, 120, 160), "gamma": 0.2,
        "weight_decay": 5e-4, "batch_size": 128, "dropout": 0.3,
    },
    # ResNeXt-29 (8x64d and 16x64d): 300 epochs, lr / 10 at 150 and 225.
    "resnext-29": {
        **_CIFAR_SGD, "arch": "resnext-29-8x64d", "epochs": 300, "milestones": (150, 225), "gamma": 0.1,
        "weight_decay": 5e-4, "batch_size": 128,
    },
    # DenseNet-BC (100-12 and 190-40): 300 epochs, lr / 10 at 150 and 225, batch 64.
    "densenet-bc": {
        **_CIFAR_SGD, "arch": "densenet-bc-100-12", "epochs": 300, "milestones": (150, 225), "gamma": 0.1,
        "weight_decay": 1e-4, "batch_size": 64,
    },
}
