"""Data: datasets, the DataLoader, built-in datasets and loaders for CSV, NPZ and IDX files."""
from chainrule.data.dataset import DataLoader, Dataset, Subset, TensorDataset, random_split
from chainrule.data.datasets import (DATASETS, Splits, circles, blobs, load_dataset, make_splits,
                                     moons, sine, spirals, xor)
from chainrule.data.files import infer_task, load_csv, load_idx, load_npz, read_idx
from chainrule.data.preprocess import Standardizer, one_hot
