"""The words mail clients write around quoted history, per language: the tables the stripper reads.

Every test is a plain string operation (prefix, suffix, membership) on a line of bounded length,
so no pattern can backtrack; adding a client's phrase is adding a row.
"""

from __future__ import annotations

# Only this much of a line is examined for a marker: attribution lines and header fields are
# short, and a hostile line of a megabyte costs no more than its first characters.
MAX_MARKER_LINE = 1000

# The verb of an attribution line ("On <date>, <name> wrote:"), by language. Most clients put it
# at the end, some in the middle ("Am <date> schrieb <name>:", "Op <date> schreef <name> ...:").
# en, de, fr, es, it, nl, pt, ja, zh, ru, and the Nordic, Polish, Czech, Ukrainian and Finnish
# forms that the same clients produce.
ATTRIBUTION_VERBS = (
    "wrote",  # en: Gmail, Apple Mail, Thunderbird, Outlook for Mac
    "writes",
    "schrieb",  # de
    "a écrit",  # fr
    "escribió",  # es
    "ha scritto",  # it
    "schreef",  # nl
    "geschreven",  # nl ("heeft ... het volgende geschreven")
    "escreveu",  # pt
    "書きました",  # ja
    "のメッセージ",  # ja (Outlook: "<date>、<name> のメッセージ:")
    "写道",  # zh (simplified)
    "寫道",  # zh (traditional)
    "написал",  # ru, also "написал(а)"
    "написала",
    "пишет",
    "пише",  # uk
    "написав",
    "napisał",  # pl, also "napisał(a)"
    "napisała",
    "napsal",  # cs
    "skrev",  # da, no, sv
    "kirjoitti",  # fi
)

# Header fields of a quoted message (Outlook desktop and OWA, Apple Mail forwards, webmails):
# the field that opens the block, and the fields that follow it, lowercase, by language.
FROM_FIELDS = frozenset(
    {
        "from", "von", "de", "van", "da", "fra", "från", "od", "от", "от кого", "发件人",
        "寄件者", "差出人", "expéditeur", "mittente", "remitente", "lähettäjä", "message du",
    }
)  # fmt: skip
OTHER_FIELDS = frozenset(
    {
        # en
        "sent", "date", "to", "subject", "cc", "bcc", "reply-to",
        # de
        "gesendet", "an", "betreff", "datum", "kopie", "antwort an",
        # fr
        "envoyé", "envoyé le", "à", "a", "objet", "sujet", "copie à", "répondre à",
        # es, pt
        "enviado", "enviado el", "enviada", "para", "asunto", "fecha", "assunto", "data",
        # it
        "inviato", "oggetto", "risposta",
        # nl
        "verzonden", "aan", "onderwerp",
        # da, no, sv, fi
        "sendt", "til", "emne", "dato", "skickat", "till", "ämne", "lähetetty",
        "vastaanottaja", "aihe", "päivämäärä",
        # pl, cs
        "wysłano", "do", "temat", "odesláno", "komu", "předmět",
        # ru, uk
        "отправлено", "кому", "тема", "дата", "копия",
        # zh, ja
        "发送时间", "收件人", "主题", "日期", "抄送", "寄件日期", "收件者", "主旨", "送信日時",
        "宛先", "件名", "日付",
    }
)  # fmt: skip
MAX_FIELD_NAME = 20

# Words on a separator line ("-----Original Message-----", "---------- Forwarded message ---"),
# lowercase. A forward separator at the very top starts a message that only forwards another.
FORWARD_WORDS = (
    "forwarded message",
    "begin forwarded message",
    "weitergeleitete nachricht",
    "anfang der weitergeleiteten",
    "message transféré",
    "début du message réexpédié",
    "mensaje reenviado",
    "inicio del mensaje reenviado",
    "messaggio inoltrato",
    "doorgestuurd bericht",
    "mensagem encaminhada",
    "пересылаемое сообщение",
    "переслан",
    "転送",
    "转发",
    "vidarebefordrat meddelande",
    "videresendt",
)

# Mobile and webmail sign-offs a client adds under what the person wrote ("Sent from my
# iPhone"), lowercase prefixes: a line that starts so ends the new text.
DEVICE_SIGNATURES = (
    "sent from ",
    "sent with ",
    "sent via ",
    "sent using ",
    "sent by ",
    "get outlook for ",
    "envoyé depuis ",
    "envoyé de mon ",
    "envoyé à partir de ",
    "von meinem ",
    "gesendet von ",
    "gesendet mit ",
    "diese nachricht wurde von meinem ",
    "verzonden met ",
    "verzonden vanaf ",
    "verstuurd vanaf ",
    "inviato da ",
    "enviado desde ",
    "enviado do ",
    "enviado de meu ",
    "enviado com ",
    "sendt fra ",
    "skickat från ",
    "lähetetty ",
    "wysłane z ",
    "wysłano z ",
    "отправлено с ",
    "отправлено из ",
    "從我的 ",
    "从我的",
    "iphoneから送信",
)
MAX_DEVICE_SIGNATURE = 120
