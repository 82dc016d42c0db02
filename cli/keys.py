"""`p2pstore key ...`: S3 access keys, kept as cluster metadata (the native API's /s3/keys)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from .common import TokenOption, UrlOption, out, request_json

AdminOption = Annotated[bool, typer.Option("--admin", help="May create buckets and reach every bucket.")]
app = typer.Typer(
    help="S3 access keys: create, import, list, allow, delete.", no_args_is_help=True, rich_markup_mode=None
)


def call(
    ctx: typer.Context, url: str | None, token: str | None, method: str, path: str, body: Any = None
) -> Any:
    """One JSON request with a JSON body through the failover client."""
    return request_json(ctx, url, token, method, path, body)


def show_created(key: dict[str, Any]) -> None:
    typer.echo(f"access key id:     {key['key_id']}")
    typer.echo(f"secret access key: {key['secret']}")
    typer.echo(f"name: {key['name']}  admin: {'yes' if key['admin'] else 'no'}")
    typer.echo("the secret is shown only now: keep it somewhere safe", err=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the key (unique).")],
    admin: AdminOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a key; prints its access key id and secret once."""
    show_created(call(ctx, url, token, "POST", "/s3/keys", {"name": name, "admin": admin}))


@app.command("import")
def import_(
    ctx: typer.Context,
    access_key_id: Annotated[str, typer.Argument(help="16-128 letters and digits.")],
    secret: Annotated[str, typer.Argument(help="16-128 printable characters.")],
    name: Annotated[str, typer.Option("--name", help="A name for the key (unique).")],
    admin: AdminOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Store a key whose id and secret are given (tests, migrations from another S3 store)."""
    body = {"access_key_id": access_key_id, "secret": secret, "name": name, "admin": admin}
    key = call(ctx, url, token, "POST", "/s3/keys", body)
    typer.echo(f"imported {key['key_id']} as {key['name']}{' (admin)' if key['admin'] else ''}")


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List keys (never their secrets)."""
    keys = call(ctx, url, token, "GET", "/s3/keys")["keys"]
    if as_json:
        out.print_json(data=keys)
        return
    from rich.table import Table

    table = Table(title="S3 access keys", title_justify="left")
    for col in ("name", "access key id", "admin", "buckets"):
        table.add_column(col)
    for k in keys:
        buckets = ", ".join(f"{b} ({'+'.join(p)})" for b, p in sorted(k["buckets"].items())) or "-"
        table.add_row(k["name"], k["key_id"], "yes" if k["admin"] else "no", buckets)
    out.print(table)


@app.command("delete")
def delete(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Access key id or name.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a key: requests signed with it are refused from then on."""
    done = call(ctx, url, token, "DELETE", f"/s3/keys/{quote(key, safe='')}")
    typer.echo(f"deleted {done['deleted']} ({done['name']})")


def bucket_path(key: str, bucket: str) -> str:
    """The native API's path for what ``key`` may do in ``bucket``."""
    return f"/s3/keys/{quote(key, safe='')}/buckets/{quote(bucket, safe='')}"


@app.command("allow")
def allow(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Access key id or name.")],
    bucket: Annotated[str, typer.Option("--bucket", help="The bucket.")],
    read: Annotated[bool, typer.Option("--read", help="May list and read objects.")] = False,
    write: Annotated[bool, typer.Option("--write", help="May put and delete objects.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Set what a key may do in a bucket (neither --read nor --write: nothing)."""
    path = bucket_path(key, bucket)
    done = call(ctx, url, token, "PUT", path, {"read": read, "write": write})
    granted = "+".join(done["buckets"].get(bucket, [])) or "nothing"
    typer.echo(f"{done['name']} may {granted} in {bucket}")


@app.command("deny")
def deny(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Access key id or name.")],
    bucket: Annotated[str, typer.Option("--bucket", help="The bucket.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Take back what a key was allowed in a bucket (its own buckets stay its own)."""
    path = bucket_path(key, bucket)
    done = call(ctx, url, token, "DELETE", path)
    typer.echo(f"{done['name']} may do nothing in {bucket} (unless it owns it)")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="key")
