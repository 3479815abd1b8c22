"""The reply stripper on samples written here, one per client shape and language, and on hostile
input (deep nesting, a megabyte of quote marks) that must simply finish."""

from __future__ import annotations

import pytest

from policy.stripping.html import strip_html
from policy.stripping.message import strip_bodies, strip_message
from policy.stripping.text import MAX_TEXT_CHARS, strip_text

NEW = "Tuesday at ten works for me."


@pytest.mark.parametrize(
    "attribution",
    [
        "On Mon, 4 Mar 2024 at 09:12, Ann Lee <ann@example.com> wrote:",  # en, Gmail
        "Am 04.03.2024 um 09:12 schrieb Ann Lee <ann@example.com>:",  # de
        "Le lun. 4 mars 2024 à 09:12, Ann Lee <ann@example.com> a écrit :",  # fr
        "El lun, 4 mar 2024 a las 09:12, Ann Lee (<ann@example.com>) escribió:",  # es
        "Il giorno lun 4 mar 2024 alle ore 09:12 Ann Lee <ann@example.com> ha scritto:",  # it
        "Op ma 4 mrt 2024 om 09:12 schreef Ann Lee <ann@example.com>:",  # nl
        "Em seg., 4 de mar. de 2024 às 09:12, Ann Lee <ann@example.com> escreveu:",  # pt
        "2024年3月4日(月) 9:12 Ann Lee <ann@example.com>:",  # ja, Gmail
        "2024年3月4日 09:12，Ann Lee <ann@example.com> 写道：",  # zh
        "пн, 4 мар. 2024 г. в 09:12, Ann Lee <ann@example.com>:",  # ru, Gmail
        "4 марта 2024 г., в 9:12, Ann Lee <ann@example.com> написал(а):",  # ru, Apple Mail
    ],
)
def test_top_posted_reply_above_a_localized_attribution(attribution: str) -> None:
    text = f"{NEW}\n\n{attribution}\n\n> Could we meet this week?\n> Ann\n"
    assert strip_text(text) == NEW


def test_an_attribution_wrapped_over_lines_by_the_client() -> None:
    text = f"{NEW}\n\nOn Mon, 4 Mar 2024 at 09:12, Ann Lee <\nann@example.com> wrote:\n\n> Old\n"
    assert strip_text(text) == NEW


def test_a_sentence_with_a_date_above_the_attribution_stays() -> None:
    text = (
        "Call me on 4 March, I am free then.\nOn Mon, 4 Mar 2024 Ann Lee <ann@example.com>\n"
        "wrote:\n> Old\n"
    )
    assert strip_text(text) == "Call me on 4 March, I am free then."


@pytest.mark.parametrize(
    "header",
    [
        "From: Ann Lee <ann@example.com>\nSent: Monday, March 4, 2024 9:12 AM\nTo: Bob\n"
        "Subject: Meeting",
        "Von: Ann Lee <ann@example.com>\nGesendet: Montag, 4. März 2024 09:12\nAn: Bob\n"
        "Betreff: Termin",
        "De : Ann Lee <ann@example.com>\nEnvoyé : lundi 4 mars 2024 09:12\nÀ : Bob\nObjet : RDV",
        "Da: Ann Lee <ann@example.com>\nInviato: lunedì 4 marzo 2024 09:12\nA: Bob",
        "Van: Ann Lee <ann@example.com>\nVerzonden: maandag 4 maart 2024 09:12\nAan: Bob",
        "De: Ann Lee <ann@example.com>\nEnviado: lunes, 4 de marzo de 2024 9:12\nPara: Bob",
        "От: Ann Lee <ann@example.com>\nОтправлено: 4 марта 2024 г. 9:12\nКому: Bob",
        "发件人: Ann Lee <ann@example.com>\n发送时间: 2024年3月4日 9:12\n收件人: Bob",
        "差出人: Ann Lee <ann@example.com>\n送信日時: 2024年3月4日 9:12\n宛先: Bob",
        "*From:* Ann Lee <ann@example.com>\n*Date:* Monday, March 4, 2024\n*To:* Bob",
    ],
)
def test_outlook_header_block_ends_the_new_text(header: str) -> None:
    text = f"{NEW}\n\n________________________________\n{header}\n\nCould we meet?\n"
    assert strip_text(text) == NEW
    assert strip_text(f"{NEW}\n\n{header}\n\nCould we meet?\n") == NEW


def test_original_message_separator() -> None:
    assert strip_text(f"{NEW}\n\n-----Ursprüngliche Nachricht-----\nalt\n") == NEW


def test_bottom_posted_answer_below_the_quote() -> None:
    text = f"On Mon, 4 Mar 2024, Ann <ann@example.com> wrote:\n> Could we meet?\n\n{NEW}\n"
    assert strip_text(text) == NEW


def test_inline_answers_are_kept_and_the_quotes_between_them_dropped() -> None:
    text = (
        "On Mon, 4 Mar 2024, Ann <ann@example.com> wrote:\n"
        "> Could we meet this week?\n\nYes, Tuesday.\n\n"
        "> And should I bring the slides?\n\nPlease do.\n"
    )
    assert strip_text(text) == "Yes, Tuesday.\n\nPlease do."


def test_a_quoted_line_wrapped_after_quoting_is_not_an_answer() -> None:
    text = (
        f"{NEW}\n\nOn Mon, 4 Mar 2024, Ann <ann@example.com> wrote:\n"
        "> a long line of the old message that the client\nwrapped after quoting\n"
    )
    assert strip_text(text) == NEW


def test_a_quote_nothing_introduced_is_a_citation_and_stays() -> None:
    text = "> the config says port 25\n\nIt should be 587."
    assert strip_text(text) == text


def test_signature_and_device_lines_end_the_new_text() -> None:
    assert strip_text(f"{NEW}\n\n-- \nBob Smith\nACME") == NEW
    assert strip_text(f"{NEW}\n\nSent from my iPhone\n\n> old") == NEW
    assert strip_text(f"{NEW}\n\nVon meinem iPhone gesendet") == NEW
    sentence = "Sent from my desk, which is easier than my phone."
    assert strip_text(f"{NEW}\n\n{sentence}") == f"{NEW}\n\n{sentence}"


def test_a_message_that_only_forwards_another_keeps_the_forwarded_text() -> None:
    text = (
        "---------- Forwarded message ---------\nFrom: Ann <ann@example.com>\n"
        "Date: Mon, 4 Mar 2024\nSubject: Slides\nTo: Bob <bob@example.com>\n\nHere they are.\n"
    )
    assert strip_text(text) == "Here they are."


def test_only_quoted_history_leaves_nothing() -> None:
    assert strip_text("> On Mon, 4 Mar 2024, Ann <ann@example.com> wrote:\n>> Old\n") == ""


def test_crlf_and_blank_lines_around() -> None:
    assert strip_text(f"\r\n\r\n{NEW}\r\n\r\n") == NEW


# -- HTML ------------------------------------------------------------------------------------

GMAIL = (
    '<div dir="ltr">Tuesday works.</div><br><div class="gmail_quote gmail_quote_container">'
    '<div dir="ltr" class="gmail_attr">On Mon, 4 Mar 2024 at 09:12, Ann &lt;ann@example.com&gt;'
    ' wrote:<br></div><blockquote class="gmail_quote">Could we meet?</blockquote></div>'
)
OUTLOOK_WEB = (
    '<div>Tuesday works.</div><div id="Signature">Bob</div>'
    '<hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg"><b>From:</b> Ann<br>'
    "<b>Sent:</b> Monday</div><div>Could we meet?</div>"
)
OUTLOOK_DESKTOP = (
    '<div class="WordSection1"><p>Tuesday works.</p><div><div style="border:none;'
    'border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm"><p><b>Von:</b> Ann</p></div>'
    "</div><p>Could we meet?</p></div>"
)
APPLE = (
    '<div>Tuesday works.<br><div><br><blockquote type="cite"><div>On 4 Mar 2024, at 09:12,'
    " Ann &lt;ann@example.com&gt; wrote:</div><div>Could we meet?</div></blockquote></div></div>"
)
THUNDERBIRD = (
    '<p>Tuesday works.</p><div class="moz-cite-prefix">On 04/03/2024 09:12, Ann wrote:<br>'
    '</div><blockquote type="cite" cite="mid:x@example.com">Could we meet?</blockquote>'
    '<div class="moz-signature">-- <br>Bob</div>'
)
YAHOO = (
    '<div class="yahoo-style-wrap">Tuesday works.</div><div id="yahoo_quoted_1" '
    'class="yahoo_quoted"><div>On Monday, March 4, 2024, Ann wrote:</div>'
    "<div>Could we meet?</div></div>"
)
PROTON = (
    '<div>Tuesday works.</div><div class="protonmail_signature_block">Sent with Proton</div>'
    '<div class="protonmail_quote">On Monday, 4 March 2024, Ann wrote:<br><blockquote '
    'class="protonmail_quote" type="cite">Could we meet?</blockquote></div>'
)
GENERIC = (
    "<p>Tuesday works.</p><p>Le lun. 4 mars 2024 à 09:12, Ann &lt;ann@example.com&gt; a écrit"
    " :</p><blockquote>Could we meet?</blockquote>"
)


@pytest.mark.parametrize(
    "markup", [GMAIL, OUTLOOK_WEB, OUTLOOK_DESKTOP, APPLE, THUNDERBIRD, YAHOO, PROTON, GENERIC]
)
def test_html_quote_containers_of_each_client_are_removed(markup: str) -> None:
    html, text = strip_html(markup)
    assert "Tuesday works." in html
    assert "Could we meet" not in html
    assert "Ann" not in html
    assert text == "Tuesday works."


@pytest.mark.parametrize(
    "markup",
    [
        # A header block in paragraphs of its own (Outlook's plain forms, other webmails).
        "<div>Tuesday works.</div><div><br></div><p><b>Von:</b> Ann &lt;ann@example.com&gt;<br>"
        "<b>Gesendet:</b> Montag<br><b>An:</b> Bob</p><p>Could we meet?</p>",
        # A separator after a line break inside the same block as the answer.
        "<div>Tuesday works.<br><br>-----Original Message-----<br>From: Ann<br>"
        "Could we meet?</div>",
        # An attribution over unquoted history, in nested blocks.
        "<div><div>Tuesday works.</div></div><div><div>On Mon, 4 Mar 2024 at 09:12, Ann "
        "&lt;ann@example.com&gt; wrote:</div><div>Could we meet?</div></div>",
    ],
)
def test_html_history_marked_only_by_its_words_is_cut(markup: str) -> None:
    html, text = strip_html(markup)
    assert "Tuesday works." in html and "Could we meet" not in html and "Ann" not in html
    assert text == "Tuesday works."


def test_a_blockquote_nothing_introduced_stays() -> None:
    html, text = strip_html("<div>See below<blockquote>the config</blockquote></div>")
    assert "<blockquote>the config</blockquote>" in html
    assert text == "See below\nthe config"


def test_bodies_stay_apart_and_html_alone_gives_the_text() -> None:
    both = strip_bodies(f"{NEW}\n\nOn Mon, 4 Mar 2024, Ann <a@example.com> wrote:\n> x", GMAIL)
    assert (both.text, both.html is not None) == (NEW, True)
    assert strip_bodies(None, GMAIL).text == "Tuesday works."
    assert strip_bodies(None, None) == strip_bodies(None, None).__class__(None, None)


def test_a_whole_message_is_read_with_the_mx_parser() -> None:
    raw = (
        b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nSubject: Re: x\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Yes.\r\n\r\nOn Mon, 4 Mar 2024, Bob <bob@example.com> wrote:\r\n> Meet?\r\n"
    )
    assert strip_message(raw).text == "Yes."


# -- hostile input: these only have to finish (linear work on capped input) ------------------


def test_a_megabyte_of_quote_marks() -> None:
    assert strip_text(">" * 1_000_000) == ">" * MAX_TEXT_CHARS
    lines = strip_text("> \n" * 300_000).split("\n")
    assert set(lines) == {">"} and len(lines) <= MAX_TEXT_CHARS // 3 + 1
    many = "On 1 Jan 2024, A <a@b.c> wrote:\n" + ">" * 500_000 + "\n"
    assert strip_text(many) == ""


def test_lines_of_near_markers() -> None:
    text = ("On 1 Jan 2024 <a@b.c> " * 50_000) + "\n" + ("From: x\n" * 50_000)
    assert strip_text(text).startswith("On 1 Jan 2024")


@pytest.mark.parametrize(
    "markup",
    [
        "<div>" * 200_000 + "deep",
        '<blockquote type="cite">' * 100_000 + "deep",
        "<!--" * 200_000,
        "<a" * 300_000,
        "<p>On 1 Jan 2024, A &lt;a@b.c&gt; wrote:</p><blockquote>" * 50_000,
        "&gt;" * 300_000,
    ],
)
def test_hostile_html(markup: str) -> None:
    html, text = strip_html(markup)
    assert len(html) <= 4 * len(markup) and len(text) <= len(markup)
