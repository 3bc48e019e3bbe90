"""Random number generation: a default generator seeded by `manual_seed`, or explicit ones."""
import numpy as np


class Generator:
    """A seeded source of random numbers (NumPy's PCG64 underneath), like `torch.Generator`."""

    def __init__(self, seed=None):
        self.manual_seed(np.random.SeedSequence().entropy if seed is None else seed)

    def manual_seed(self, seed):
        self.initial_seed_value = int(seed)
        self.rng = np.random.Generator(np.random.PCG64(self.initial_seed_value))
        return self

    def initial_seed(self):
        return self.initial_seed_value

    def get_state(self):
        """The generator's state as a plain dict (JSON-able), for checkpoints."""
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state


default_generator = Generator(0)


def manual_seed(seed):
    """Seed the default generator (used whenever no `generator=` is given)."""
    return default_generator.manual_seed(seed)


def rng(generator=None):
    return (generator or default_generator).rng
