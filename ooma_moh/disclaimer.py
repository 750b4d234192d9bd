"""The rights disclaimer a tenant admin accepts before their file plays to callers.

The text has a version: every upload records the version that was accepted, and the page sends
the version it showed, so a changed text is never accepted unseen. Change ``VERSION`` whenever the
text changes.
"""

from __future__ import annotations

VERSION = "2026-11-27"

TEXT = {
    "fr": (
        "Je certifie détenir les droits nécessaires (droits d'auteur, droits voisins et licences de"
        " diffusion) pour faire écouter ce fichier à mes correspondants en attente, et j'accepte d'en"
        " assumer seul la responsabilité."
    ),
    "en": (
        "I certify that I hold all the rights needed (copyright, neighbouring rights and public"
        " performance licences) to play this file to callers on hold, and I accept sole"
        " responsibility for it."
    ),
}
