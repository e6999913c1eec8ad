"""Model families and model ids.

A family is chosen from the checkpoint's ``config.json`` ``model_type`` — never from the id string — so a
renamed local copy of a hub model still loads with the right adapter. Ids can be hub ids
(``llava-hf/llava-onevision-qwen2-7b-ov-hf``), local checkpoint folders, or ``zoo:<name>`` (tiny local
checkpoints built on first use, see zoo.py).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from vlm.data.errors import DataError

# model_type -> module with `Adapter` (a VLMAdapter), `zoo_model(tokenizer, spec)` and `ZOO_PREFIX` (its zoo entries' names)
FAMILIES: dict[str, str] = {
    "llava_onevision": "vlm.models.llava_onevision",
    "qwen2_vl": "vlm.models.qwen2_vl",
    "qwen2_5_vl": "vlm.models.qwen2_vl",
    "cobra": "vlm.models.cobra",
}
ZOO_PREFIX = "zoo:"


def resolve_path(model_id: str) -> str:
    """Local folder for zoo ids (built if needed) and local paths; hub ids are returned unchanged."""
    if model_id.startswith(ZOO_PREFIX):
        from vlm.models import zoo

        return str(zoo.ensure(model_id[len(ZOO_PREFIX):]))
    return model_id


def read_config(model_id: str) -> dict:
    path = resolve_path(model_id)
    local = Path(path)
    if local.is_dir():
        cfg_file = local / "config.json"
        if not cfg_file.is_file():
            raise DataError.single(local, "config.json", "not found: not a transformers checkpoint folder")
        text = cfg_file.read_text()
    elif local.exists() or path.startswith((".", "/", "~")):
        raise DataError.single(path, "-", "not a checkpoint folder")
    else:
        from huggingface_hub import hf_hub_download

        try:
            text = Path(hf_hub_download(path, "config.json")).read_text()
        except Exception as e:  # offline, unknown repo, gated, ...: one line, not a traceback
            raise DataError.single(path, "config.json", f"cannot fetch from the hub ({type(e).__name__}: {e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError.single(path, f"config.json line {e.lineno}", f"malformed JSON: {e.msg}") from None


def family_of(model_id: str) -> str:
    model_type = read_config(model_id).get("model_type")
    if model_type not in FAMILIES:
        raise DataError.single(model_id, "config.json: model_type",
                               f"'{model_type}' is not supported (supported: {', '.join(FAMILIES)})")
    return model_type


def family_module(family: str) -> ModuleType:
    return importlib.import_module(FAMILIES[family])


def load_model(model_id: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto", **options):
    """The family's VLMAdapter around the loaded model (+ optional PEFT adapter) and its processor. ``options``:
    ``attn_implementation``, ``image_budget`` (see vlm.models.options.ModelOptions.load_kwargs)."""
    module = family_module(family_of(model_id))  # importing registers custom families (cobra) with the Auto classes
    return module.Adapter.load(resolve_path(model_id), adapter=adapter, dtype=dtype, device=device, name=model_id, **options)


@dataclass
class Config:
    """Print the model family of a model id (hub id, local folder or zoo:<name>)."""

    model: str = field(metadata={"help": "model id", "positional": True})


def main(cfg: Config) -> int:
    print(family_of(cfg.model))
    return 0
