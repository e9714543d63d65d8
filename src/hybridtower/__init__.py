"""hybridtower: Hybrid-Tower text-to-video retrieval (PIG, ICCV 2025).

The package is layered: ``cli`` -> ``service``/``index``/``train``/``eval`` -> ``models``/``data``
-> ``core``. Library modules never import the CLI.
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: keep `import hybridtower` light for the CLI
    if name in ("create_model", "load_model", "save_model", "load_clip"):
        from . import hub

        return getattr(hub, name)
    if name in ("list_presets", "preset_config", "ModelConfig"):
        from . import models

        return getattr(models, name)
    raise AttributeError(name)
