"""Small reference models, each an ``nn.Sequential`` whose children a pipeline can split."""
from .cnn import SimpleCNN
from .gpt import CausalSelfAttention, GPTBlock, GPTEmbedding, SequenceCrossEntropyLoss, TinyGPT
from .mlp import MLP

__all__ = ['MLP', 'SimpleCNN', 'TinyGPT', 'GPTEmbedding', 'GPTBlock', 'CausalSelfAttention',
           'SequenceCrossEntropyLoss']
