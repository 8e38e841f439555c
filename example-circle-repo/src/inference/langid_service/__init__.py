"""HTTP language identification service for the example circle (standard library only).

``model`` is the pure core (features, scoring, model-file validation); ``server`` is the HTTP
shell around it; ``python -m langid_service`` runs it.
"""

from langid_service.model import UNDETERMINED, LangidModel, Prediction, load_model

__all__ = ["UNDETERMINED", "LangidModel", "Prediction", "load_model"]
