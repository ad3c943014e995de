"""The Review tab and the desk's endpoints: one queued item at a time, leased to one signed-in
moderator, blurred (and optionally grey) until they choose to look; allow, block or skip, each
optionally putting the image's hash on a list. Anonymous callers are refused with a sentence."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import time
from typing import Any

import gradio as gr
from PIL import ImageFilter, ImageOps

from nsfw_space.desk.auth import hub_moderator
from nsfw_space.desk.desk import Desk
from nsfw_space.errors import DeskError, InvalidImageError
from nsfw_space.media.images import load_image
from nsfw_space.space.messages import shown_as_desk_error

logger = logging.getLogger(__name__)

PREVIEW_SIZE = 768
NOTHING = "Nothing is waiting for review."
EMPTY_PREVIEW = '<div class="desk-empty">No item is open.</div>'


Profile = gr.OAuthProfile | None
HubToken = gr.OAuthToken | None


class ReviewViews:
    """The Review tab's events; every one checks the caller is a signed-in moderator first (a
    session token from a password sign-in, or Gradio's Hugging Face OAuth profile, which a caller
    cannot send: Gradio fills it from the signed session cookie)."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def sign_in(self, name: Any, password: Any) -> tuple[str, str]:
        """Sign in with a moderator's name and password; returns (session token, status line)."""
        with shown_as_desk_error():
            token = self.desk.moderators.sign_in(name, password)
        return token, f"Signed in as **{name}**."

    def moderator(self, token: Any, profile: Profile = None, hub_token: HubToken = None) -> str:
        """The caller's moderator name. Raises NotSignedInError."""
        allowed = self.desk.options.hub_moderators
        if profile is not None and allowed and not _is_session(token):
            orgs = (
                _organisations(hub_token)
                if profile.username.lower() not in {a.lower() for a in allowed}
                else []
            )
            name = hub_moderator(profile.username, orgs, allowed)
            if name is not None:
                return name
        return self.desk.moderators.moderator(token)

    def next_item(
        self, token: Any, grey: Any = True, profile: Profile = None, hub_token: HubToken = None
    ) -> tuple[dict[str, Any] | None, str, str]:
        """Lease the next item to the signed-in moderator: (lease, blurred preview, details)."""
        with shown_as_desk_error():
            lease = self.desk.queue.next(self.moderator(token, profile, hub_token))
        if lease is None:
            return None, EMPTY_PREVIEW, NOTHING
        state = {"item_id": lease.item_id, "lease": lease.token}
        return state, _preview(lease.image, blurred=True, grey=bool(grey)), _details(lease)

    def look(self, token: Any, state: Any, profile: Profile = None, hub_token: HubToken = None) -> str:
        """The leased item unblurred, for its moderator only."""
        with shown_as_desk_error():
            lease = self.desk.queue.held(self.moderator(token, profile, hub_token))
        if lease is None or not isinstance(state, dict) or state.get("item_id") != lease.item_id:
            raise gr.Error(
                "This item is no longer yours to look at; take the next one.", print_exception=False
            )
        return _preview(lease.image, blurred=False, grey=False)

    def allow(
        self,
        token: Any,
        state: Any,
        add_to_list: Any,
        grey: Any = True,
        profile: Profile = None,
        hub_token: HubToken = None,
    ) -> tuple[dict[str, Any] | None, str, str]:
        """Allow the leased item (optionally putting its hash on the allow list); then the next."""
        return self.decide(token, state, "allow", add_to_list, grey, profile, hub_token)

    def block(
        self,
        token: Any,
        state: Any,
        add_to_list: Any,
        grey: Any = True,
        profile: Profile = None,
        hub_token: HubToken = None,
    ) -> tuple[dict[str, Any] | None, str, str]:
        """Block the leased item (optionally putting its hash on the block list); then the next."""
        return self.decide(token, state, "block", add_to_list, grey, profile, hub_token)

    def decide(
        self,
        token: Any,
        state: Any,
        decision: str,
        add_to_list: Any,
        grey: Any = True,
        profile: Profile = None,
        hub_token: HubToken = None,
    ) -> tuple[dict[str, Any] | None, str, str]:
        """Record allow or block (optionally listing the image's hash), then lease the next item."""
        with shown_as_desk_error():
            moderator = self.moderator(token, profile, hub_token)
            item_id, lease_token = _lease_of(state)
            listed = None
            if add_to_list:
                self._list(item_id, decision, moderator)
                listed = decision
            self.desk.queue.decide(item_id, lease_token, moderator, decision, listed)
        return self.next_item(token, grey, profile, hub_token)

    def _list(self, item_id: str, decision: str, moderator: str) -> None:
        item_hash = self.desk.queue.hash_of_item(item_id)
        if item_hash is None:  # queued without a hash: hash the stored image now
            lease = self.desk.queue.held(moderator)
            image_hash = (
                self.desk.hash_of(lease.image) if lease is not None and lease.item_id == item_id else None
            )
            if image_hash is None or not image_hash.usable:
                raise DeskError(
                    "This image's hash is too weak to list (a flat or tiny picture); untick the list box to decide it."
                )
            item_hash = image_hash.hex
        self.desk.lists.add(decision, item_hash, note=f"review {item_id}", by=moderator)

    def skip(
        self, token: Any, state: Any, grey: Any = True, profile: Profile = None, hub_token: HubToken = None
    ) -> tuple[Any, Any, str]:
        """Hand the item back undecided and take the next one."""
        with shown_as_desk_error():
            moderator = self.moderator(token, profile, hub_token)
            item_id, lease_token = _lease_of(state)
            self.desk.queue.skip(item_id, lease_token, moderator)
        return self.next_item(token, grey, profile, hub_token)

    def sign_out(self, token: Any, state: Any) -> tuple[str, str, None, str, str]:
        """End the session; an item still held goes straight back to the queue."""
        with shown_as_desk_error():
            if isinstance(state, dict) and _is_session(token):
                try:
                    moderator = self.desk.moderators.moderator(token)
                    item_id, lease_token = _lease_of(state)
                    self.desk.queue.skip(item_id, lease_token, moderator, after_s=0.0)
                except DeskError:
                    pass  # not signed in any more, or no item open: nothing to hand back
            self.desk.moderators.sign_out(token)
        return "", "Signed out.", None, EMPTY_PREVIEW, NOTHING

    def status(self, token: Any, profile: Profile = None, hub_token: HubToken = None) -> dict[str, Any]:
        """The desk's counts (pending, decided, list sizes), for moderators."""
        with shown_as_desk_error():
            self.moderator(token, profile, hub_token)
            return self.desk.status()


def review_tab(desk: Desk, hub_sign_in: bool = False) -> gr.Textbox:
    """The Review tab with its events (inside the page's Tabs); returns the session token's
    component, which the Calibrate tab's desk button reads."""
    views = ReviewViews(desk)
    with gr.Tab("Review", id="review"):
        gr.Markdown(
            "For this desk's moderators. Items wait here when their decision is *review*; each is "
            "yours alone until you decide or skip it. Keys: **a** allow, **b** block, **s** skip, **l** look."
        )
        # plain components, not gr.State: API callers send and receive them (State is page-only)
        token = gr.Textbox(visible=False, label="session token")
        lease = gr.JSON(visible=False, label="lease")
        with gr.Row():
            if hub_sign_in:
                gr.LoginButton()
            name = gr.Textbox(label="Moderator", elem_id="desk-name", scale=2)
            password = gr.Textbox(label="Password", type="password", elem_id="desk-password", scale=2)
            sign_in = gr.Button("Sign in", elem_id="desk-sign-in", scale=1)
            sign_out = gr.Button("Sign out", elem_id="desk-sign-out", scale=1)
        signed = gr.Markdown(elem_id="desk-signed")
        with gr.Row():
            # an <img> with a data: URL, not gr.Image: a stored image never lands in Gradio's file
            # cache, where anyone holding its URL could fetch it
            preview = gr.HTML(EMPTY_PREVIEW, elem_id="desk-item")
            with gr.Column():
                details = gr.Markdown(NOTHING, elem_id="desk-details")
                grey = gr.Checkbox(value=True, label="Greyscale preview")
                listed = gr.Checkbox(
                    value=False, label="Also add to the allow/block list", elem_id="desk-list"
                )
                with gr.Row():
                    look = gr.Button("Look (l)", elem_id="desk-look")
                    allow = gr.Button("Allow (a)", elem_id="desk-allow")
                    block = gr.Button("Block (b)", variant="stop", elem_id="desk-block")
                    skip = gr.Button("Skip (s)", elem_id="desk-skip")
                take = gr.Button("Next item", variant="primary", elem_id="desk-next")
        status = gr.JSON(visible=False)
        status_button = gr.Button(visible=False)
    item = [lease, preview, details]
    sign_in.click(views.sign_in, [name, password], [token, signed], api_name="desk_sign_in").then(
        views.next_item, [token, grey], item, api_name="desk_next"
    )
    take.click(views.next_item, [token, grey], item, api_visibility="private")
    sign_out.click(views.sign_out, [token, lease], [token, signed, *item], api_name="desk_sign_out")
    look.click(views.look, [token, lease], preview, api_name="desk_look")
    allow.click(views.allow, [token, lease, listed, grey], item, api_name="desk_allow")
    block.click(views.block, [token, lease, listed, grey], item, api_name="desk_block")
    skip.click(views.skip, [token, lease, grey], item, api_name="desk_skip")
    status_button.click(views.status, [token], status, api_name="desk_status")
    return token


def on_a_space() -> bool:
    """Whether this runs on a Hugging Face Space (where "Sign in with Hugging Face" works)."""
    from gradio.utils import get_space

    return get_space() is not None


def _is_session(token: Any) -> bool:
    return isinstance(token, str) and bool(token)


ORGS_KEPT_S = 300.0
_orgs_seen: dict[str, tuple[float, list[str]]] = {}  # a token's digest -> (when asked, organisations)


def _organisations(hub_token: Any) -> list[str]:
    """The signed-in user's organisations, asked of the Hub with their OAuth token ([] on
    failure), and kept for 5 minutes so a moderator's every click does not ask again."""
    if hub_token is None:
        return []
    key = hashlib.sha256(str(hub_token.token).encode()).hexdigest()
    seen = _orgs_seen.get(key)
    if seen is not None and time.monotonic() - seen[0] < ORGS_KEPT_S:
        return seen[1]
    try:
        from huggingface_hub import whoami

        orgs = [str(org.get("name", "")) for org in whoami(hub_token.token).get("orgs", [])]
    except Exception:  # noqa: BLE001 - offline or refused: no organisations, the user list still applies
        logger.warning("Desk: the Hub did not say which organisations this user belongs to.")
        return []
    _orgs_seen[key] = (time.monotonic(), orgs)
    return orgs


def _lease_of(state: Any) -> tuple[str, str]:
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("item_id"), str)
        or not isinstance(state.get("lease"), str)
    ):
        raise DeskError("No item is open; take the next one.")
    return state["item_id"], state["lease"]


def _preview(image: bytes, blurred: bool, grey: bool) -> str:
    """The item as an inline JPEG (at most 768 px), blurred and grey unless the moderator looks."""
    try:
        picture = load_image(image, draft_size=(PREVIEW_SIZE, PREVIEW_SIZE))
    except InvalidImageError:
        return '<div class="desk-empty">This stored file cannot be shown; decide it from its score.</div>'
    picture.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    if grey:
        picture = ImageOps.grayscale(picture).convert("RGB")
    if blurred:
        picture = picture.filter(ImageFilter.GaussianBlur(max(picture.size) / 24))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    state = "blurred" if blurred else "shown"
    return (
        f'<img class="desk-item-{state}" alt="the item under review ({state})" style="max-width:100%" '
        f'src="data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
    )


def _details(lease: Any) -> str:
    why = "sent to review by its score" if lease.reason == "review" else "a random audit of allowed images"
    minutes = max(0, round((lease.until - time.time()) / 60))
    return (
        f"**Score** {lease.nsfw_score:.4f} — {why}  \n"
        f"Queued {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(lease.created_at))}; yours for {minutes} more min."
    )
