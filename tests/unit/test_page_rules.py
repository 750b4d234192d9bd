"""Pure rules of the page and its sign-in: languages, sentences, link and session lifetimes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ooma_moh import disclaimer
from ooma_moh.credentials import BrowserSession, LoginLink
from ooma_moh.http.texts import LANGUAGES, TEXTS, pick_language

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_both_languages_say_everything() -> None:
    assert set(TEXTS) == set(LANGUAGES)
    assert TEXTS["fr"].keys() == TEXTS["en"].keys()
    for lang in LANGUAGES:
        for key, text in TEXTS[lang].items():
            assert text.strip() == text and text, (lang, key)
            # placeholders the script fills must be the same in both languages
            assert re.findall(r"\{(\w+)\}", text) == re.findall(r"\{(\w+)\}", TEXTS["en"][key]), (lang, key)
    assert TEXTS["fr"]["disclaimer_text"] == disclaimer.TEXT["fr"]
    assert TEXTS["en"]["disclaimer_text"] == disclaimer.TEXT["en"]


def test_every_refusal_the_api_makes_has_a_sentence() -> None:
    from ooma_moh.rejections import Rejection

    assert Rejection.TOO_LARGE.status == 413 and Rejection.NO_AUDIO.value == "no_audio"
    codes = {r.value for r in Rejection if r.on_page} | {
        "csrf_required",
        "unauthorized",
        "timeout",
        "disk_full",
    }
    for lang in LANGUAGES:
        missing = {code for code in codes if f"error_{code}" not in TEXTS[lang]}
        assert not missing, (lang, missing)


def test_every_analysis_warning_is_one_plain_sentence() -> None:
    """Issue 21: each warning the analysis can give is said to a business admin in one sentence,
    in both languages, without an engineer's units."""
    from ooma_moh.analysis import WARNINGS

    assert set(WARNINGS) == {
        "clipping",
        "dc_offset",
        "mono_cancellation",
        "outside_phone_band",
        "mostly_silence",
        "too_short",
    }
    for lang in LANGUAGES:
        for code in WARNINGS:
            text = TEXTS[lang][f"warning_{code}"]
            assert text.endswith(".") and ". " not in text, (lang, code, text)
            assert not re.search(r"\b(dB|LUFS|dBTP|DC|RMS|mono loss)\b", text), (lang, code, text)
    assert "3\u00a0400" in TEXTS["fr"]["warning_outside_phone_band"]  # a number never split over two lines
    assert "3,400" in TEXTS["en"]["warning_outside_phone_band"]


def test_drafts_and_restore_refusals_have_sentences() -> None:
    """What the page's new calls (a draft, saving it, restore) can be refused with is a sentence."""
    from ooma_moh.http.api import FIXED_ANSWERS

    answered = {code for _, _, code, _ in FIXED_ANSWERS}
    assert {"no_draft", "too_many_drafts", "nothing_to_restore"} <= answered
    for lang in LANGUAGES:
        for code in ("no_draft", "too_many_drafts", "nothing_to_restore", "upload_in_progress"):
            assert f"error_{code}" in TEXTS[lang], (lang, code)


def test_recording_and_background_music_are_said_in_both_languages() -> None:
    """Issue 26: the record button, the microphone's refusals, a silent recording, the background
    music and what its request can be refused with — each a sentence in French and in English."""
    from ooma_moh.http.api import FIXED_ANSWERS

    names = {
        "record": ("Enregistrer un message", "Record a message"),
        "record_stop": ("Arrêter", "Stop"),
        "mix_add": ("Ajouter la musique de fond", "Add background music"),
        "bed_default": ("Musique par défaut de la plateforme", "The platform's default music"),
        "bed_current": ("Votre musique actuelle", "Your current music"),
    }
    for key, (fr, en) in names.items():
        assert (TEXTS["fr"][key], TEXTS["en"][key]) == (fr, en), key
    answered = {code for _, _, code, _ in FIXED_ANSWERS}
    assert {"no_file", "bed_unavailable"} <= answered
    mix_refusals = ("bed_unavailable", "no_file", "invalid_mix", "too_many_drafts", "upload_in_progress")
    for lang in LANGUAGES:
        texts = TEXTS[lang]
        for code in mix_refusals:
            assert texts[f"error_{code}"].endswith("."), (lang, code)
        # a recording nobody can hear is not a "silent file": it says what to check
        assert texts["error_silent_recording"] != texts["error_silent"]
        for key in ("mic_denied", "mic_missing", "mic_busy", "error_silent_recording", "recording_too_large"):
            assert texts[key].endswith(".") and len(set(texts[key].split())) > 5, (lang, key)
        assert "5" in texts["recording"] and "5" in texts["record_hint"], "the 5-minute limit is said"
    assert "Rien n'a été envoyé" in TEXTS["fr"]["mic_denied"] and "Nothing was sent" in TEXTS["en"]["mic_denied"]


STATIC = Path(__file__).resolve().parents[2] / "ooma_moh" / "http" / "static"
#: the page's fields page.py fills itself, not from the sentences
PAGE_FIELDS = {"lang", "other_lang", "csrf", "config_json", "account"}
#: sentences the script picks by a prefix and a code (``t["warning_" + code]``)
DYNAMIC_PREFIXES = ("error_", "warning_", "status_")


def test_every_sentence_the_page_uses_exists_and_every_sentence_is_used() -> None:
    script = (STATIC / "page.js").read_text(encoding="utf-8")
    page = (STATIC / "page.html").read_text(encoding="utf-8")
    used_by_script = set(re.findall(r"\bt\.(\w+)", script)) | set(re.findall(r"\bt\[\"(\w+)\"\]", script))
    prefixes = set(re.findall(r"\bt\[\"(\w+_)\" \+", script))
    assert prefixes == set(DYNAMIC_PREFIXES), prefixes
    used_by_page = set(re.findall(r"\$\{(\w+)\}", page)) - PAGE_FIELDS
    for lang in LANGUAGES:
        assert not (used_by_script | used_by_page) - TEXTS[lang].keys(), lang
    # and no sentence is left behind: each is in the page, the script, or the server's Python
    python = "".join(path.read_text(encoding="utf-8") for path in (STATIC.parent).glob("*.py"))
    for key in TEXTS["en"]:
        if key in used_by_script | used_by_page or key.startswith(DYNAMIC_PREFIXES):
            continue
        assert f'"{key}"' in python, f"sentence {key} is never shown"


@pytest.mark.parametrize(
    ("query", "cookie", "accept", "expected"),
    [
        (None, None, None, "fr"),
        (None, None, "en-US,en;q=0.9", "en"),
        (None, None, "de-DE,de;q=0.9,en;q=0.8,fr;q=0.7", "en"),
        (None, None, "en;q=0.2, fr;q=0.8", "fr"),
        (None, None, "fr;q=0, en", "en"),
        (None, None, "*", "fr"),
        (None, None, "en;q=bogus, fr", "fr"),
        (None, "en", "fr-FR", "en"),
        ("fr", "en", "en", "fr"),
        ("xx", None, "en", "en"),
        (None, "<script>", "en", "en"),
    ],
)
def test_language_choice(query: str | None, cookie: str | None, accept: str | None, expected: str) -> None:
    assert pick_language(query, cookie, accept) == expected


def test_a_login_link_works_once_before_it_expires() -> None:
    link = LoginLink("0123456789abcdef", "acme", "Camille", T0, T0 + timedelta(minutes=15))
    assert link.refusal(T0) is None
    assert link.refusal(T0 + timedelta(minutes=14, seconds=59)) is None
    assert link.refusal(T0 + timedelta(minutes=15)) == "expired"
    used = LoginLink(link.id, "acme", "Camille", T0, link.expires_at, used_at=T0 + timedelta(minutes=1))
    assert used.refusal(T0 + timedelta(minutes=2)) == "used"


def test_a_session_manages_only_its_tenant_until_it_ends() -> None:
    session = BrowserSession("s" * 16, "acme", "Camille", "l" * 16, "csrf", T0, T0 + timedelta(hours=8))
    assert session.open_at(T0 + timedelta(hours=7)) and not session.open_at(T0 + timedelta(hours=8))
    assert session.may_manage("acme") and not session.may_manage("acme2")
    assert session.actor == "Camille (login link llllllllllllllll)"
    ended = BrowserSession("s" * 16, "acme", "Camille", "l" * 16, "csrf", T0, T0 + timedelta(hours=8), ended_at=T0)
    assert not ended.open_at(T0 + timedelta(minutes=1)) and not ended.may_manage("acme")


def test_redact_hides_every_credential_secret_but_keeps_its_id() -> None:
    from ooma_moh.logsafe import redact

    link = "ff8d183210fbe51d_cIjVOY1dq0wS3rR8d8w7S5kQHqvTmJ81gMRaZh56QxA"
    token = "omh_0123abcd_SNC_hd_NQSlknXwqSkAlfj_Rs7-izqsAsX56oQmCSF0abc"
    encoded = link.replace("_", "%5F", 1)
    line = f"b'GET /login/{link}\\x01 HTTP/1.1' Cookie: omh_session={link}; t={token} /login/{encoded}"
    out = redact(line)
    assert "cIjVOY1d" not in out and "SNC_hd" not in out
    assert out.count("ff8d183210fbe51d_<secret>") == 3 and "omh_0123abcd_<secret>" in out
    assert redact("tenant acme uploaded hold_music_final_v2.mp3") == "tenant acme uploaded hold_music_final_v2.mp3"


def test_the_recorder_and_the_mix_request_follow_the_server() -> None:
    """The page's recording and mix rules match the server's: the beds it offers, the level it
    asks for, the 5-minute stop, the size checked before sending; it styles nothing inline (the
    Content-Security-Policy has no 'unsafe-inline'), and the microphone is allowed to the page only."""
    from ooma_moh.beds import BED_LEVEL_RANGE, BEDS, DEFAULT_BED_LEVEL_DB
    from ooma_moh.http.page import SECURITY_HEADERS

    script = (STATIC / "page.js").read_text(encoding="utf-8")
    page = (STATIC / "page.html").read_text(encoding="utf-8")
    assert set(re.findall(r'name="bed" value="(\w+)"', page)) == set(BEDS)
    asked = re.search(r"bed_level_db: (-?\d+)", script)
    assert asked and float(asked[1]) == DEFAULT_BED_LEVEL_DB
    assert BED_LEVEL_RANGE[0] <= DEFAULT_BED_LEVEL_DB <= BED_LEVEL_RANGE[1]
    assert "const MAX_RECORDING_MS = 5 * 60 * 1000;" in script
    assert "blob.size > config.max_bytes" in script, "a recording over the cap is refused in the browser"
    assert '"audio/webm;codecs=opus"' in script and "/mix" in script and '"Content-Type": "application/json"' in script
    for text in (script, page):
        assert not re.search(r"\bstyle\s*=|\.style\b|setAttribute\(\s*\"style", text), "no inline style"
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "style-src 'self';" in csp and "unsafe-inline" not in csp
    policy = SECURITY_HEADERS["Permissions-Policy"]
    assert "microphone=(self)" in policy and "camera=()" in policy


def test_every_test_call_state_and_reason_and_the_statistics_are_said_in_both_languages() -> None:
    """Issue 22: the page has a sentence for each state and failure a test call can report, reads
    them by the API's own values, and says the hold statistics' sentence in both languages."""
    from ooma_moh.testcall import CallState, FailReason

    script = (STATIC / "page.js").read_text(encoding="utf-8")
    states = re.search(r"const CALL_STATES = \{(.*?)\};", script, re.S)
    failures = re.search(r"const CALL_FAILURES = \{(.*?)\};", script, re.S)
    assert states and failures
    said = dict(re.findall(r'"?(\w[\w ]*)"?: t\.(\w+)', states[1]))
    assert set(said) == {s.value for s in CallState} - {"failed"}, said  # a failure is said by its reason
    why = dict(re.findall(r'"?(\w[\w ]*)"?: t\.(\w+)', failures[1]))
    assert set(why) == {r.value for r in FailReason}, why
    for lang in LANGUAGES:
        texts = TEXTS[lang]
        for key in [*said.values(), *why.values(), "call_failed", "call_unknown_endpoint", "call_too_soon"]:
            assert texts[key].endswith("."), (lang, key)
        assert "{wait}" in texts["call_too_soon"] and "5" in texts["call_too_soon"], "when to try again"
    assert (TEXTS["fr"]["call_button"], TEXTS["en"]["call_button"]) == ("Tester sur mon téléphone", "Call my phone")
    for lang, expected in (
        ("fr", "412 appels mis en attente ces 30 derniers jours · attente médiane 38 s · 7\u00a0% ont raccroché"),
        ("en", "412 calls put on hold in the last 30 days · median wait 38 s · 7% hung up while on hold"),
    ):
        texts = TEXTS[lang]
        sentence = " · ".join(
            (
                texts["holds_count"].format(count=412, days=30),
                texts["holds_median"].format(wait="38 s"),
                texts["holds_hung_up"].format(percent=7),
            )
        )
        assert sentence.startswith(expected), sentence
    assert '" · "' in script, "the page joins the three parts as above"
