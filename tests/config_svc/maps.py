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

# A docxtpl template's maps (issue 11): "language": "jinja", zones declared by its Jinja names, with capitals.
JINJA_ZONE_MAP = {
    "language": "jinja",
    "zones": [
        {"id": "Client", "label": "Client", "kind": "record", "declared_by": "jinja",
         "location": {"part": "/word/document.xml", "block": 0, "path": "w:p[0]"},
         "accepts": {"intents": [], "domains": [], "data": "data/client.csv", "fallback": False},
         "fields": ["name", "city"], "marked": False},
        {"id": "items", "label": "Items", "kind": "table", "declared_by": "jinja",
         "location": {"part": "/word/document.xml", "block": 1, "path": "w:tbl[0]/w:tr[1]/w:tc[0]/w:p[0]"},
         "accepts": {"intents": [], "domains": [], "data": "data/*.csv", "fallback": False},
         "fields": ["desc", "qty"], "marked": True},
        {"id": "paid", "label": "Paid", "kind": "flag", "declared_by": "jinja",
         "location": {"part": "/word/document.xml", "block": 2, "path": "w:p[1]"},
         "accepts": {"intents": ["banking.transfer"], "domains": [], "fallback": False}, "marked": False},
        {"id": "steps", "label": "Steps", "kind": "list", "declared_by": "jinja",
         "location": {"part": "/word/document.xml", "block": 3, "path": "w:p[2]"},
         "accepts": {"intents": [], "domains": ["home"], "fallback": False}, "marked": True},
        {"id": "notes", "label": "Notes", "kind": "text", "declared_by": "jinja",
         "location": {"part": "/word/footer1.xml", "block": 0, "path": "w:p[0]"},
         "accepts": {"intents": [], "domains": [], "fallback": True}, "marked": True},
    ],
    "fallback_zone": "notes",
}
JINJA_STYLE_MAP = {
    "defaults": {"font": "Calibri", "size_pt": 11},
    "zones": {zone["id"]: {"paragraph_style": "Normal", "run_style": None, "table_style": None, "resolved": {}}
              for zone in JINJA_ZONE_MAP["zones"]},
}


def jinja_maps():
    return copy.deepcopy(JINJA_ZONE_MAP), copy.deepcopy(JINJA_STYLE_MAP)
