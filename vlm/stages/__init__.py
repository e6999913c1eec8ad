"""One module per pipeline stage: a ``Config`` dataclass and a ``main(cfg)``."""
