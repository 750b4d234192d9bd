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
        "file_hint": "Un seul fichier, 5 Mo au maximum : WAV, MP3, OGG, WebM, FLAC ou M4A.",
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
        "error_unrecognised_format": "Ce fichier n'est pas un format audio accepté (WAV, MP3, OGG, WebM, FLAC ou M4A).",
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
        "error_upload_in_progress": "Un autre fichier est en cours d'envoi pour ce compte : réessayez dans quelques"
        " secondes.",
        "error_too_many_drafts": "Trop de fichiers attendent d'être sauvegardés sur ce compte : sauvegardez-en un,"
        " ou réessayez plus tard.",
        "error_no_draft": "Ce fichier n'est plus disponible (il expire au bout d'une heure) : choisissez-le à nouveau.",
        "error_nothing_to_restore": "Il n'y a plus de musique précédente à rétablir.",
        "draft_sending": "Envoi et analyse du fichier…",
        "draft_ready": "Analyse terminée : écoutez le fichier et lisez ce qui suit avant de sauvegarder.",
        "draft_heading": "Avant de sauvegarder : ce que vos correspondants entendront",
        "listen_draft": "Écouter le nouveau fichier",
        "quality": "Qualité d'écoute",
        "quality_phone": "Qualité téléphone",
        "quality_hd": "Haute définition",
        "previous": "Musique précédente : {name} ({details}, envoyée le {date})",
        "restore": "Rétablir la musique précédente",
        "restore_hint": "Cochez la limitation de responsabilité ci-dessous pour rétablir la musique précédente.",
        "warnings_label": "Points d'attention",
        "no_warnings": "Aucun problème détecté.",
        "warning_clipping": "Le son est saturé : ce fichier a été enregistré ou mixé trop fort, vos correspondants"
        " entendront de la distorsion.",
        "warning_dc_offset": "Ce fichier avait un décalage électrique (un défaut d'enregistrement) : il a été"
        " corrigé, vous n'avez rien à faire.",
        "warning_mono_cancellation": "Les appels téléphoniques sont en mono : quand les deux canaux de ce fichier"
        " stéréo sont mélangés, une partie du son s'annule (une voix peut par exemple disparaître).",
        "warning_outside_phone_band": "La plus grande partie de ce son est hors de ce qu'une ligne téléphonique"
        " transmet (de 300 à 3\u00a0400 Hz), par exemple des basses profondes : vos correspondants en entendront"
        " peu.",
        "warning_mostly_silence": "Ce fichier est surtout fait de silence : vos correspondants n'entendront presque"
        " rien.",
        "warning_too_short": "Ce morceau dure moins de 15 secondes : vos correspondants en attente l'entendront"
        " recommencer souvent.",
        "wave_alt": "Forme d'onde du son que vos correspondants entendront : {duration}.",
        "trimmed_start": "Silence retiré au début : {seconds} s",
        "trimmed_end": "Silence retiré à la fin : {seconds} s",
        "figures": "Chiffres clés",
        "figure_duration": "Durée après retrait des silences : {duration}",
        "figure_loudness": "Volume ajusté de {before} à {after} LUFS",
        "figure_loop": "La fin s'enchaîne en fondu avec le début : pas de coupure quand le morceau recommence.",
        "record": "Enregistrer un message",
        "record_again": "Enregistrer à nouveau",
        "record_hint": "Ou enregistrez votre message au micro (5 minutes au plus) : il sera analysé comme un"
        " fichier, et rien ne change pour vos correspondants avant que vous sauvegardiez.",
        "record_waiting": "Autorisez l'accès au micro pour enregistrer…",
        "recording": "Enregistrement en cours : parlez maintenant. Il s'arrête de lui-même au bout de 5 minutes.",
        "record_time": "Durée enregistrée",
        "record_level": "Niveau du micro",
        "record_stop": "Arrêter",
        "recorded": "Message enregistré : {duration}",
        "recording_too_large": "Cet enregistrement fait {size} : la limite est de 5 Mo. Enregistrez un message"
        " plus court.",
        "mic_denied": "Le navigateur n'a pas le droit d'utiliser le micro : autorisez-le pour cette page (dans"
        " la barre d'adresse), puis réessayez. Rien n'a été envoyé.",
        "mic_missing": "Aucun micro n'a été trouvé : branchez-en un, puis réessayez.",
        "mic_busy": "Le micro est déjà utilisé par une autre application : fermez-la, puis réessayez.",
        "error_silent_recording": "Nous n'avons rien entendu dans cet enregistrement : vérifiez que le bon micro"
        " est choisi et qu'il n'est pas coupé, puis enregistrez à nouveau.",
        "mix_legend": "Musique de fond sous votre message",
        "mix_hint": "La musique est baissée pendant que vous parlez.",
        "bed_default": "Musique par défaut de la plateforme",
        "bed_current": "Votre musique actuelle",
        "mix_add": "Ajouter la musique de fond",
        "mix_sending": "Ajout de la musique de fond…",
        "mix_ready": "Musique de fond ajoutée : écoutez le résultat avant de sauvegarder.",
        "error_bed_unavailable": "La musique par défaut de la plateforme n'est pas disponible pour le moment :"
        " contactez votre opérateur, ou choisissez votre musique actuelle.",
        "error_no_file": "Vous n'avez pas de musique actuelle à mettre sous ce message : choisissez la musique"
        " par défaut de la plateforme.",
        "error_invalid_mix": "Cette musique de fond ne peut pas être ajoutée : rechargez la page et réessayez.",
        "holds_heading": "Vos correspondants en attente",
        "holds_count": "{count} appels mis en attente ces {days} derniers jours",
        "holds_count_one": "1 appel mis en attente ces {days} derniers jours",
        "holds_none": "Aucun appel mis en attente ces {days} derniers jours",
        "holds_median": "attente médiane {wait}",
        "holds_hung_up": "{percent}\u00a0% ont raccroché pendant l'attente",
        "chart_alt": "Graphique des {days} derniers jours : les appels mis en attente chaque jour en barres, l'attente"
        " médiane en points. Le tableau qui suit donne les chiffres.",
        "chart_holds": "Appels mis en attente",
        "chart_median": "Attente médiane",
        "chart_day": "Jour (UTC)",
        "chart_table": "Appels mis en attente et attente médiane, jour par jour",
        "call_heading": "Écouter sur un vrai téléphone",
        "call_hint": "Nous appelons le téléphone choisi : décrochez, vous entendez la musique d'attente exactement"
        " comme vos correspondants, puis l'appel se termine de lui-même.",
        "call_endpoint": "Téléphone à appeler",
        "call_button": "Tester sur mon téléphone",
        "call_placing": "Appel en cours…",
        "call_ringing": "Votre téléphone sonne : décrochez.",
        "call_playing": "Vous entendez la musique d'attente comme vos correspondants.",
        "call_ended": "Appel de test terminé.",
        "call_failed": "L'appel de test a échoué.",
        "call_busy": "Le téléphone est occupé : réessayez quand il sera libre.",
        "call_no_answer": "Personne n'a décroché.",
        "call_unreachable": "Le téléphone est injoignable : vérifiez qu'il est allumé et connecté.",
        "call_ari_down": "Le système téléphonique ne répond pas : réessayez plus tard ou contactez votre opérateur.",
        "call_unknown_endpoint": "Ce téléphone n'est plus sur votre compte : rechargez la page.",
        "call_too_soon": "Un seul appel de test à la fois, et 5 par heure au plus : vous pourrez réessayer dans"
        " {wait}.",
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
        "file_hint": "One file, at most 5 MB: WAV, MP3, OGG, WebM, FLAC or M4A.",
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
        "error_unrecognised_format": "This file is not an accepted audio format (WAV, MP3, OGG, WebM, FLAC or M4A).",
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
        "error_upload_in_progress": "Another file is being sent for this account: try again in a few seconds.",
        "error_too_many_drafts": "Too many files are waiting to be saved on this account: save one, or try again"
        " later.",
        "error_no_draft": "This file is no longer available (it expires after an hour): choose it again.",
        "error_nothing_to_restore": "There is no previous music to restore any more.",
        "draft_sending": "Sending and analysing the file…",
        "draft_ready": "Analysis done: listen to the file and read what follows before saving.",
        "draft_heading": "Before you save: what callers will hear",
        "listen_draft": "Listen to the new file",
        "quality": "Playback quality",
        "quality_phone": "Phone quality",
        "quality_hd": "HD",
        "previous": "Previous music: {name} ({details}, uploaded {date})",
        "restore": "Restore previous music",
        "restore_hint": "Tick the disclaimer below to restore the previous music.",
        "warnings_label": "Things to check",
        "no_warnings": "No problems found.",
        "warning_clipping": "The sound is distorted: this file was recorded or mastered too loud, and callers will"
        " hear the distortion.",
        "warning_dc_offset": "This file had an electrical offset (a recording fault): it has been corrected, there"
        " is nothing to do.",
        "warning_mono_cancellation": "Phone calls are mono: when this stereo file's two channels are mixed, parts"
        " of the sound cancel out (a voice may vanish, for example).",
        "warning_outside_phone_band": "Most of this sound is outside what a phone line carries (300 to 3,400 Hz),"
        " deep bass for example: callers will hear little of it.",
        "warning_mostly_silence": "This file is mostly silence: callers will hear almost nothing.",
        "warning_too_short": "This recording is under 15 seconds: callers waiting will hear it start over often.",
        "wave_alt": "Waveform of what callers will hear: {duration}.",
        "trimmed_start": "Silence removed at the start: {seconds} s",
        "trimmed_end": "Silence removed at the end: {seconds} s",
        "figures": "Key figures",
        "figure_duration": "Length after removing silence: {duration}",
        "figure_loudness": "Loudness adjusted from {before} to {after} LUFS",
        "figure_loop": "The end fades into the start: no gap when it starts over.",
        "record": "Record a message",
        "record_again": "Record again",
        "record_hint": "Or record your message with the microphone (5 minutes at most): it is analysed like a"
        " file, and nothing changes for callers until you save.",
        "record_waiting": "Allow the microphone to record…",
        "recording": "Recording: speak now. It stops by itself after 5 minutes.",
        "record_time": "Time recorded",
        "record_level": "Microphone level",
        "record_stop": "Stop",
        "recorded": "Recorded message: {duration}",
        "recording_too_large": "This recording is {size}: the limit is 5 MB. Record a shorter message.",
        "mic_denied": "The browser may not use the microphone: allow it for this page (in the address bar),"
        " then try again. Nothing was sent.",
        "mic_missing": "No microphone was found: plug one in, then try again.",
        "mic_busy": "The microphone is already in use by another application: close it, then try again.",
        "error_silent_recording": "We heard nothing in this recording: check that the right microphone is chosen"
        " and not muted, then record again.",
        "mix_legend": "Background music under your message",
        "mix_hint": "The music is lowered while you speak.",
        "bed_default": "The platform's default music",
        "bed_current": "Your current music",
        "mix_add": "Add background music",
        "mix_sending": "Adding the background music…",
        "mix_ready": "Background music added: listen to the result before saving.",
        "error_bed_unavailable": "The platform's default music is not available right now: contact your"
        " operator, or choose your current music.",
        "error_no_file": "You have no current music to put under this message: choose the platform's default music.",
        "error_invalid_mix": "This background music cannot be added: reload the page and try again.",
        "holds_heading": "Your callers on hold",
        "holds_count": "{count} calls put on hold in the last {days} days",
        "holds_count_one": "1 call put on hold in the last {days} days",
        "holds_none": "No calls put on hold in the last {days} days",
        "holds_median": "median wait {wait}",
        "holds_hung_up": "{percent}% hung up while on hold",
        "chart_alt": "Chart of the last {days} days: the calls put on hold each day as bars, the median wait as"
        " dots. The table that follows gives the figures.",
        "chart_holds": "Calls put on hold",
        "chart_median": "Median wait",
        "chart_day": "Day (UTC)",
        "chart_table": "Calls put on hold and median wait, day by day",
        "call_heading": "Hear it on a real phone",
        "call_hint": "We call the phone you choose: answer it and you hear the music on hold exactly as callers"
        " do, then the call ends by itself.",
        "call_endpoint": "Phone to call",
        "call_button": "Call my phone",
        "call_placing": "Calling…",
        "call_ringing": "Your phone is ringing: answer it.",
        "call_playing": "You are hearing the music on hold as callers do.",
        "call_ended": "Test call ended.",
        "call_failed": "The test call failed.",
        "call_busy": "The phone is busy: try again when it is free.",
        "call_no_answer": "Nobody answered.",
        "call_unreachable": "The phone cannot be reached: check that it is on and connected.",
        "call_ari_down": "The phone system does not answer: try again later or contact your operator.",
        "call_unknown_endpoint": "This phone is no longer on your account: reload the page.",
        "call_too_soon": "One test call at a time, and 5 an hour at most: you can try again in {wait}.",
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
