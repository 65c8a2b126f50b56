"""The MCP surface: ImageGate's tools for agents, over streamable HTTP at /mcp and over stdio (`imagegate mcp`)."""
