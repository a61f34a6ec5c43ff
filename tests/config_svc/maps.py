"""Small valid zone and style maps for config tests."""

import copy

ZONE_MAP = {
    "zones": [
        {
            "id": "summary",
            "label": "Summary",
            "kind": "text",
            "declared_by": "content_control",
            "location": {"part": "/word/document.xml", "block": 1},
            "accepts": {"domains": ["travel"], "intents": ["banking.transfer"]},
        },
        {
            "id": "notes",
            "label": "Notes",
            "kind": "text",
            "declared_by": "placeholder",
            "location": {"part": "/word/document.xml", "block": 4},
            "accepts": {"fallback": True},
        },
    ],
    "fallback_zone": "notes",
}
STYLE_MAP = {
    "defaults": {"font": "Calibri", "size_pt": 11, "color": "auto", "alignment": "left"},
    "zones": {
        "summary": {
            "paragraph_style": "Normal",
            "run_style": None,
            "table_style": None,
            "resolved": {"font": "Calibri", "size_pt": 11, "bold": False},
        }
    },
}
SHA = "ab" * 32


def maps(label: str = "Summary"):
    zm, sm = copy.deepcopy(ZONE_MAP), copy.deepcopy(STYLE_MAP)
    zm["zones"][0]["label"] = label
    return zm, sm
