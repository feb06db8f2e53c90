"""facexlib's network definitions, loaded file by file.

Importing any part of the facexlib package runs its `__init__`, which imports its detector
(torchvision, PIL) and tracker (filterpy). The network files gpenvideo uses (RetinaFace's layers,
ParseNet) need torch alone, so each is loaded on its own from the installed package's folder;
facexlib's own downloader is never used (weights come through gpenvideo's lookup).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from ..errors import InputError


def facexlib_module(relative: str, need: str, instead: str) -> ModuleType:
    """facexlib's `relative` file (e.g. "parsing/parsenet.py") as a module of its own.
    need: what needs it ("--mask parsing"); instead: the option that does without it."""
    spec = importlib.util.find_spec("facexlib")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"{need} needs facexlib: pip install 'gpenvideo[retinaface]' "
                         f"(or pip install --no-deps facexlib), or use {instead}")
    path = Path(spec.submodule_search_locations[0]) / relative
    name = "gpenvideo._facexlib_" + relative.replace("/", "_").removesuffix(".py")
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or not path.is_file():
        raise InputError(f"{path}: this facexlib lacks the file {need} uses; "
                         f"pip install 'facexlib>=0.3', or use {instead}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
