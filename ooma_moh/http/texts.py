"""Every sentence the page and the sign-in screens show, in French and in English.

The server picks the language (:func:`pick_language`), fills the HTML with it and hands the
page's script the sentences it needs as JSON. Both languages have the same keys (a unit test
checks it).
"""

from __future__ import annotations

from .. import disclaimer

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"

TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Musique d'attente",
        "intro": "Ce que vos correspondants entendent quand l'un de vos utilisateurs les met en attente.",
        "account": "Compte : {tenant}",
        "choice": "Musique jouée en attente",
        "default_music": "Musique par défaut",
        "audio_file": "Fichier audio",
        "change_file": "Modifier fichier",
        "file_hint": "Un seul fichier, 5 Mo au maximum : WAV, MP3, OGG, FLAC ou M4A.",
        "disclaimer": "Limitation de responsabilité",
        "disclaimer_text": disclaimer.TEXT["fr"],
        "save": "Sauvegarder",
        "progress": "Envoi du fichier",
        "current_file": "Fichier actuel",
        "no_file": "Aucun fichier : vos correspondants entendent la musique par défaut.",
        "listen": "Écouter",
        "pause": "Pause",
        "delete": "Corbeille",
        "confirm_delete": "Supprimer ce fichier ? Vos correspondants entendront la musique par défaut.",
        "sign_out": "Se déconnecter",
        "switch_language": "English",
        "status_converting": "Conversion du fichier en cours…",
        "status_publishing": "Mise en ligne en cours…",
        "status_live_file": "En ligne : la prochaine fois qu'un de vos correspondants sera mis en attente,"
        " il entendra ce fichier.",
        "status_live_default": "En ligne : vos correspondants en attente entendent la musique par défaut.",
        "status_error": "La mise en ligne a échoué : {reason}. Réessayez ou contactez votre opérateur.",
        "choose_file": "Choisissez d'abord un fichier audio.",
        "accept_disclaimer": "Cochez la limitation de responsabilité pour sauvegarder.",
        "file_too_large": "Ce fichier fait {size} : la limite est de 5 Mo. Choisissez un fichier plus petit.",
        "error_too_large": "Ce fichier dépasse la limite de 5 Mo.",
        "error_unrecognised_format": "Ce fichier n'est pas un format audio accepté (WAV, MP3, OGG, FLAC ou M4A).",
        "error_no_audio": "Ce fichier ne contient pas de son.",
        "error_empty": "Ce fichier est vide.",
        "error_too_short": "Ce morceau est trop court.",
        "error_too_long": "Ce morceau est trop long.",
        "error_silent": "Ce fichier est silencieux.",
        "error_undecodable": "Ce fichier audio est illisible ou endommagé.",
        "error_truncated": "Ce fichier audio est incomplet (tronqué).",
        "error_sample_rate": "La fréquence d'échantillonnage de ce fichier n'est pas acceptée.",
        "error_channels": "Ce fichier a trop de canaux audio.",
        "error_too_costly": "Ce fichier demande trop de ressources pour être converti.",
        "error_disclaimer_required": "Cochez la limitation de responsabilité pour sauvegarder.",
        "error_disclaimer_changed": "Le texte de la limitation de responsabilité a changé : rechargez la page"
        " et relisez-le.",
        "error_csrf_required": "La page a expiré : rechargez-la.",
        "error_unauthorized": "Votre session a pris fin : demandez un nouveau lien de connexion à votre opérateur.",
        "error_timeout": "L'envoi a pris trop de temps : vérifiez votre connexion et réessayez.",
        "error_disk_full": "Le serveur est plein : votre musique actuelle est conservée. Réessayez plus tard.",
        "error_network": "Le serveur ne répond pas : vérifiez votre connexion et réessayez.",
        "error_other": "L'opération a échoué ({message}). Votre musique actuelle est conservée.",
        "kept": "Votre musique actuelle est conservée.",
        "sign_in_title": "Connexion",
        "sign_in_text": "Ouvrir la page Musique d'attente de votre compte {tenant}.",
        "sign_in": "Se connecter",
        "link_unknown": "Ce lien de connexion n'est pas valable. Vérifiez qu'il est complet, ou demandez-en"
        " un nouveau à votre opérateur.",
        "link_used": "Ce lien de connexion a déjà servi : chaque lien ne sert qu'une fois. Demandez-en un"
        " nouveau à votre opérateur.",
        "link_expired": "Ce lien de connexion a expiré. Demandez-en un nouveau à votre opérateur.",
        "link_revoked": "Ce lien de connexion a été annulé par votre opérateur. Demandez-en un nouveau.",
        "link_cross_site": "Cette connexion ne vient pas de cette page : ouvrez le lien directement.",
        "signed_out": "Vous n'êtes pas connecté. Ouvrez le lien de connexion que votre opérateur vous a donné.",
        "signed_out_done": "Vous êtes déconnecté.",
    },
    "en": {
        "title": "Music on hold",
        "intro": "What your callers hear when one of your users puts them on hold.",
        "account": "Account: {tenant}",
        "choice": "Music played on hold",
        "default_music": "Default music",
        "audio_file": "Audio file",
        "change_file": "Change file",
        "file_hint": "One file, at most 5 MB: WAV, MP3, OGG, FLAC or M4A.",
        "disclaimer": "Disclaimer",
        "disclaimer_text": disclaimer.TEXT["en"],
        "save": "Save",
        "progress": "Upload progress",
        "current_file": "Current file",
        "no_file": "No file: callers hear the default music.",
        "listen": "Listen",
        "pause": "Pause",
        "delete": "Delete",
        "confirm_delete": "Delete this file? Callers will hear the default music.",
        "sign_out": "Sign out",
        "switch_language": "Français",
        "status_converting": "Converting the file…",
        "status_publishing": "Going live…",
        "status_live_file": "Live: the next time one of your callers is put on hold, they hear this file.",
        "status_live_default": "Live: callers on hold hear the default music.",
        "status_error": "Going live failed: {reason}. Try again or contact your operator.",
        "choose_file": "Choose an audio file first.",
        "accept_disclaimer": "Tick the disclaimer to save.",
        "file_too_large": "This file is {size}: the limit is 5 MB. Choose a smaller file.",
        "error_too_large": "This file is over the 5 MB limit.",
        "error_unrecognised_format": "This file is not an accepted audio format (WAV, MP3, OGG, FLAC or M4A).",
        "error_no_audio": "This file contains no sound.",
        "error_empty": "This file is empty.",
        "error_too_short": "This recording is too short.",
        "error_too_long": "This recording is too long.",
        "error_silent": "This file is silent.",
        "error_undecodable": "This audio file cannot be read or is damaged.",
        "error_truncated": "This audio file is incomplete (truncated).",
        "error_sample_rate": "This file's sample rate is not accepted.",
        "error_channels": "This file has too many audio channels.",
        "error_too_costly": "This file needs too much work to convert.",
        "error_disclaimer_required": "Tick the disclaimer to save.",
        "error_disclaimer_changed": "The disclaimer's text has changed: reload the page and read it again.",
        "error_csrf_required": "The page has expired: reload it.",
        "error_unauthorized": "Your session has ended: ask your operator for a new sign-in link.",
        "error_timeout": "The upload took too long: check your connection and try again.",
        "error_disk_full": "The server is full: your current music is kept. Try again later.",
        "error_network": "The server does not answer: check your connection and try again.",
        "error_other": "That failed ({message}). Your current music is kept.",
        "kept": "Your current music is kept.",
        "sign_in_title": "Sign in",
        "sign_in_text": "Open the Music on hold page of your account {tenant}.",
        "sign_in": "Sign in",
        "link_unknown": "This sign-in link is not valid. Check that it is complete, or ask your operator for"
        " a new one.",
        "link_used": "This sign-in link has already been used: each link works once. Ask your operator for a new one.",
        "link_expired": "This sign-in link has expired. Ask your operator for a new one.",
        "link_revoked": "Your operator has cancelled this sign-in link. Ask them for a new one.",
        "link_cross_site": "This sign-in did not come from this page: open the link directly.",
        "signed_out": "You are not signed in. Open the sign-in link your operator gave you.",
        "signed_out_done": "You are signed out.",
    },
}


def _accepted(header: str) -> list[str]:
    """Accept-Language's language ranges, best first (q=0 dropped)."""
    ranked = []
    for position, item in enumerate(header.split(",")):
        tag, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, position, tag.strip().lower()))
    return [tag for _, _, tag in sorted(ranked)]


def pick_language(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The page's language: an explicit choice (``?lang=``, then the cookie it set), then the
    first of French or English in Accept-Language, then French."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    for tag in _accepted(accept_language or ""):
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE
