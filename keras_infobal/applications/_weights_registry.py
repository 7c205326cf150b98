"""Shipped weights: written by applications/cifar10/export_weights.py. Do not edit by hand."""

WEIGHTS = {'dim': {'feature_layer': 'conv',
         'file': 'dim_cifar10.weights.h5',
         'run': 'applications/cifar10/runs/dim',
         'sha256': '05e6a0ef0d7aa7997d43593f039d5c28ecf1d22cca5fca53c8795e3c49076229',
         'test_accuracy': 0.6075},
 'dim_pairs': {'feature_layer': 'fc',
               'file': 'dim_pairs_cifar10.weights.h5',
               'run': 'applications/cifar10/runs/dim_pairs',
               'sha256': '58e5a8d9ffacbc90a349073e9065cdf567de4e42c36f2ac7dd02219de0e84bc7',
               'test_accuracy': 0.7155},
 'infobal': {'feature_layer': 'fc',
             'file': 'infobal_cifar10.weights.h5',
             'run': 'applications/cifar10/runs/infobal',
             'sha256': '843c59ec1565557a922353ff87bd9864f55899ed48ef107a2404d021f409f584',
             'test_accuracy': 0.5421}}
