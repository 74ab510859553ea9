"""robust-mc: robust mode connectivity between adversarially trained networks.

Public API (imported lazily by the modules that need it; nothing heavy runs at import):

- data: ``load_data``; models: ``create_model``, ``list_models``;
- checkpoints: ``load_checkpoint``, ``save_checkpoint``, ``build_model``;
- evaluation: ``evaluate_model`` with attacks from ``attacks.build_attack``.
"""

from robust_mc.run.provenance import version

__version__ = version()
