"""After training: a trained workdir and what is done with it.

`inference` (the one loader, `load(workdir)`; evaluation, prediction, features), `analysis`
(functions of a trained network's arrays: ensembles, conv1's colour split, neighbours), `retrieval`
(Figure 4's nearest neighbours), `exporting` (serving without this package) and `weights`
(torchvision's ImageNet weights in and out). The trainer imports none of them.
"""
