"""The intent engine: utterance -> intent, domain, confidence, out-of-scope flag, model version.

Import the parts you need (``astra.core.intent.model.IntentModel``); this package stays light so the CLI starts
without loading torch.
"""
