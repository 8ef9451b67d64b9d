"""Training and testing the architectures a search finds (the original train.py and
test.py, CNN and RNN) on the search engine.

    from fastdarts.train import CNNTrainConfig, train_cnn, test_cnn
    engine = train_cnn(CNNTrainConfig(genotype="DARTS_V2", data="~/cifar10"))
    print(test_cnn("eval-cnn/checkpoint.pt", "~/cifar10"))
"""

from .augment import TrainLoader, cutout, cutout_mask
from .cnn import CNNTrainConfig, CNNTrainer, test_cnn, train_cnn
from .model_cnn import AuxiliaryHeadCIFAR, Cell, NetworkCIFAR, count_parameters_in_MB, drop_path
from .rnn import (
    RNNTrainConfig,
    RNNTrainer,
    asgd_should_switch,
    build_rnn_model,
    count_parameters,
    test_rnn,
    train_rnn,
)

__all__ = ["TrainLoader", "cutout", "cutout_mask", "CNNTrainConfig", "CNNTrainer", "test_cnn", "train_cnn",
           "AuxiliaryHeadCIFAR", "Cell", "NetworkCIFAR", "count_parameters_in_MB", "drop_path",
           "RNNTrainConfig", "RNNTrainer", "asgd_should_switch", "build_rnn_model", "count_parameters",
           "test_rnn", "train_rnn"]
