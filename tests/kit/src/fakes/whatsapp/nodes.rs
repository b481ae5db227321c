//! Binary-node helpers for the fake server: decode/encode with the client's own codec
//! (`wacore_binary`), attribute and child accessors, and the stanzas the server sends (IQ results
//! and errors, acks, stream errors). Pure functions; never touches a socket.

use whatsapp_rust::wacore_binary::builder::NodeBuilder;
use whatsapp_rust::wacore_binary::marshal::unmarshal_ref;
use whatsapp_rust::wacore_binary::util::unpack;
use whatsapp_rust::wacore_binary::{Node, NodeContent, marshal};

/// The server's own JID, as every server-originated stanza names it.
pub const SERVER: &str = "s.whatsapp.net";

pub fn decode(frame: &[u8]) -> Result<Node, String> {
    let raw = unpack(frame).map_err(|e| format!("node unpack: {e}"))?;
    let node = unmarshal_ref(&raw).map_err(|e| format!("node unmarshal: {e}"))?;
    Ok(node.to_owned())
}

pub fn encode(node: &Node) -> Result<Vec<u8>, String> {
    marshal(node).map_err(|e| format!("node marshal: {e}"))
}

pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

pub fn child<'a>(node: &'a Node, tag: &str) -> Option<&'a Node> {
    node.get_optional_child(tag)
}

pub fn children<'a>(node: &'a Node, tag: &'a str) -> impl Iterator<Item = &'a Node> {
    node.get_children_by_tag(tag)
}

pub fn bytes(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        Some(NodeContent::String(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

pub fn child_bytes<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    child(node, tag).and_then(bytes)
}

/// Big-endian unsigned integer from a byte node (registration ids, 3-byte key ids).
pub fn be_uint(b: &[u8]) -> u32 {
    b.iter()
        .take(4)
        .fold(0u32, |acc, x| (acc << 8) | u32::from(*x))
}

pub fn iq_result(id: &str, content: Vec<Node>) -> Node {
    let mut b = NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "result")
        .attr("id", id.to_string());
    if !content.is_empty() {
        b = b.children(content);
    }
    b.build()
}

pub fn iq_error(id: &str, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", SERVER)
        .attr("type", "error")
        .attr("id", id.to_string())
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text.to_string())
            .build()])
        .build()
}

pub fn stream_error(code: u16) -> Node {
    NodeBuilder::new("stream:error")
        .attr("code", code.to_string())
        .build()
}

pub fn conflict_replaced() -> Node {
    NodeBuilder::new("stream:error")
        .children([NodeBuilder::new("conflict")
            .attr("type", "replaced")
            .build()])
        .build()
}

/// Server ack for a stanza the client sent (`message`, `receipt`, `notification`…).
pub fn ack_for(stanza: &Node, now_secs: u64) -> Option<Node> {
    let id = attr(stanza, "id")?;
    let mut b = NodeBuilder::new("ack")
        .attr("class", stanza.tag.to_string())
        .attr("id", id)
        .attr("t", now_secs.to_string());
    if let Some(to) = attr(stanza, "to") {
        b = b.attr("from", to);
    }
    if let Some(kind) = attr(stanza, "type")
        && stanza.tag != "message"
    {
        b = b.attr("type", kind);
    }
    Some(b.build())
}

/// A short printable summary for debug logs (tag, a few attributes, child tags); no payloads.
pub fn summary(node: &Node) -> String {
    let attrs: Vec<String> = node
        .attrs
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_ref(),
                "id" | "type" | "xmlns" | "to" | "from" | "class"
            )
        })
        .map(|(k, v)| format!("{k}={}", v.as_str()))
        .collect();
    let kids: Vec<String> = node
        .children()
        .map(|c| c.iter().map(|n| n.tag.to_string()).collect())
        .unwrap_or_default();
    format!("<{} {}> [{}]", node.tag, attrs.join(" "), kids.join(","))
}
