"""weightshare: does a vision network need weight sharing?

A research trainer that compares convolutional networks (CNNs) with free convolutional
networks (FCNs, locally connected layers) under the protocol of Ott et al. (2020).
"""

__version__ = "0.1.0"
