"""vlm: chain-of-thought distillation from a large VLM (teacher) into a small one (student).

The only entry point the pipelines call is ``python -m vlm <stage> …`` (see ``vlm/__main__.py``).
"""

__version__ = "0.1.0"
