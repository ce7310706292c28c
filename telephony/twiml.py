"""TwiML answers, built with twilio's `VoiceResponse`, and the phrases they speak.

Phrases exist in the languages of the sites we serve first; any other language falls back to
English. `<Say language=...>` takes Twilio's locale codes
(https://www.twilio.com/docs/voice/twiml/say#language).
"""

from __future__ import annotations

from dataclasses import dataclass

from twilio.twiml.voice_response import Dial, VoiceResponse

SAY_LOCALES = {
    "fr": "fr-FR",
    "en": "en-GB",
    "de": "de-DE",
    "es": "es-ES",
    "it": "it-IT",
    "nl": "nl-NL",
}
RECORDING_NOTICE = {
    "fr": "Cet appel est susceptible d'être enregistré.",
    "en": "This call may be recorded.",
    "de": "Dieser Anruf kann aufgezeichnet werden.",
    "es": "Esta llamada puede ser grabada.",
    "it": "Questa chiamata potrebbe essere registrata.",
    "nl": "Dit gesprek kan worden opgenomen.",
}
APOLOGY = {
    "fr": "Nous sommes désolés, ce numéro n'est pas attribué. Au revoir.",
    "en": "We are sorry, this number is not in service. Goodbye.",
    "de": "Es tut uns leid, diese Nummer ist nicht vergeben. Auf Wiederhören.",
    "es": "Lo sentimos, este número no está asignado. Adiós.",
    "it": "Siamo spiacenti, questo numero non è assegnato. Arrivederci.",
    "nl": "Het spijt ons, dit nummer is niet in gebruik. Tot ziens.",
}
CALLBACK_GREETING = {
    "fr": "Rappel d'un visiteur du site. Mise en relation.",
    "en": "Calling back a website visitor. Connecting you now.",
}
# Whisper: a short phrase to whoever answers, naming where the caller came from.
WHISPER_TEMPLATE = {"fr": "Appel {}", "en": "{} call", "de": "Anruf {}", "es": "Llamada {}"}
_SOURCE_LABELS = {
    ("Paid Search", "google"): "Google Ads",
    ("Paid Search", "bing"): "Microsoft Ads",
    ("Paid Search", "microsoft"): "Microsoft Ads",
    ("Paid Social", "facebook"): "Meta Ads",
    ("Paid Social", "instagram"): "Meta Ads",
    ("Paid Social", "linkedin"): "LinkedIn Ads",
    ("Paid Social", "tiktok"): "TikTok Ads",
    ("Paid Shopping", "google"): "Google Shopping",
}
_CHANNEL_LABELS: dict[str, dict[str | None, str]] = {
    "fr": {
        "Paid Search": "recherche payante",
        "Organic Search": "recherche naturelle",
        "Paid Social": "réseaux sociaux payants",
        "Organic Social": "réseaux sociaux",
        "Paid Shopping": "shopping payant",
        "Organic Shopping": "shopping",
        "Paid Video": "vidéo payante",
        "Organic Video": "vidéo",
        "Display": "display",
        "Email": "e-mail",
        "Affiliates": "affiliation",
        "Referral": "site référent",
        "Direct": "direct",
        "SMS": "SMS",
        "Audio": "audio",
        "Cross-network": "campagne multi-réseaux",
        "Paid Other": "publicité",
        "Mobile Push Notifications": "notification",
        "AI Assistant": "assistant IA",
        None: "origine inconnue",
    },
    "en": {None: "untracked"},
}


def say_locale(language: str | None) -> str:
    """Map a site language (`fr`, `fr-BE`) to a `<Say>` locale."""
    return SAY_LOCALES.get((language or "en")[:2].lower(), "en-GB")


def _phrase(table: dict[str, str], language: str | None) -> str:
    return table.get((language or "en")[:2].lower(), table["en"])


def channel_label(
    channel: str | None, source: str | None, language: str | None, *, say_source: bool = False
) -> str:
    """Name a channel briefly for a whisper: "Google Ads", "recherche naturelle"...

    `say_source`: the source is the merchant's own words (a source number's rule), which say
    more than "unassigned" ("Appel newsletter"). A visit's source is whatever its link said
    (`utm_source=...`): never read out to the advisor."""
    key = (channel or "", (source or "").lower())
    if key in _SOURCE_LABELS:
        return _SOURCE_LABELS[key]
    if say_source and channel in (None, "Unassigned", "Direct") and source:
        return source[:40]
    labels = _CHANNEL_LABELS.get((language or "en")[:2].lower(), _CHANNEL_LABELS["en"])
    if channel in labels:
        return labels[channel]
    return channel or _CHANNEL_LABELS["en"][None]


def whisper_phrase(
    channel: str | None, source: str | None, language: str | None, *, say_source: bool = False
) -> str:
    """Say where the caller came from: "Appel Google Ads", "Organic Search call"."""
    template = _phrase(WHISPER_TEMPLATE, language)
    return template.format(channel_label(channel, source, language, say_source=say_source))


@dataclass(frozen=True)
class ForwardPlan:
    """Everything the answer to an incoming call depends on."""

    forward_to: str
    language: str
    dial_action_url: str
    status_url: str
    recording_notice: bool = False
    record: bool = False
    recording_status_url: str | None = None
    whisper_url: str | None = None
    caller_id: str | None = None


# Twilio sends one status callback per event named here for the <Number> leg
# (https://www.twilio.com/docs/voice/twiml/number#attributes-status-callback-event).
NUMBER_EVENTS = "initiated ringing answered completed"


def _dial(response: VoiceResponse, plan: ForwardPlan) -> Dial:
    # answerOnBridge: the caller hears ringing, and billing starts, only when the merchant's
    # line answers (https://www.twilio.com/docs/voice/twiml/dial#answeronbridge).
    options: dict[str, str] = {}
    if plan.record and plan.recording_status_url:
        # Both parties on separate channels, from the moment the line answers: nothing of the
        # ringing or of the notice is recorded.
        options["record"] = "record-from-answer-dual"
        options["recording_status_callback"] = plan.recording_status_url
        options["recording_status_callback_event"] = "completed"
    if plan.caller_id:
        options["caller_id"] = plan.caller_id
    dial = response.dial(
        action=plan.dial_action_url, method="POST", answer_on_bridge=True, **options
    )
    number_options: dict[str, str] = {
        "status_callback": plan.status_url,
        "status_callback_event": NUMBER_EVENTS,
        "status_callback_method": "POST",
    }
    if plan.whisper_url:
        number_options["url"] = plan.whisper_url
        number_options["method"] = "POST"
    dial.number(plan.forward_to, **number_options)
    return dial


def forward_call(plan: ForwardPlan) -> str:
    """Answer an incoming call: notice, then dial the business line (whisper, recording)."""
    response = VoiceResponse()
    if plan.recording_notice:
        response.say(_phrase(RECORDING_NOTICE, plan.language), language=say_locale(plan.language))
    _dial(response, plan)
    return str(response)


def forward_plainly(forward_to: str) -> str:
    """Connect a caller to a business line with nothing else (unknown tracking number)."""
    response = VoiceResponse()
    response.dial(forward_to, answer_on_bridge=True)
    return str(response)


def apologise(language: str | None) -> str:
    """Tell the caller politely that the number leads nowhere, then hang up."""
    response = VoiceResponse()
    response.say(_phrase(APOLOGY, language), language=say_locale(language))
    response.hangup()
    return str(response)


def whisper(phrase: str | None, language: str | None) -> str:
    """Speak a phrase to whoever answers before the two parties are connected."""
    response = VoiceResponse()
    if phrase:
        response.say(phrase, language=say_locale(language))
    return str(response)


def recording_notice(language: str | None) -> str:
    """Tell the answering visitor that the call may be recorded."""
    return whisper(_phrase(RECORDING_NOTICE, language), language)


def bridge(plan: ForwardPlan) -> str:
    """Answer the advisor's leg of a callback: a greeting, then dial the visitor."""
    response = VoiceResponse()
    response.say(_phrase(CALLBACK_GREETING, plan.language), language=say_locale(plan.language))
    _dial(response, plan)
    return str(response)


def hang_up() -> str:
    """End the call (the answer to the `<Dial>` action callback)."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def empty() -> str:
    """Answer with nothing to do (Twilio then carries on, or bridges a whisper leg)."""
    return str(VoiceResponse())
