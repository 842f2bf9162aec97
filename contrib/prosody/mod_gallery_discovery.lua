-- mod_gallery_discovery: tell a host's users where their gallery is.
--
-- Adds to the host's disco#info (XEP-0030) the XEP-0128 data form the Xabber apps look for:
--
--   <x xmlns='jabber:x:data' type='result'>
--     <field var='FORM_TYPE' type='hidden'><value>urn:xabber:http:url</value></field>
--     <field var='urn:xabber:http:url:mediagallery'><value>https://files.example.org/api/</value></field>
--   </x>
--
-- Configuration (globally, or under a VirtualHost to advertise a different gallery per host):
--
--   plugin_paths = { "/opt/gallery/contrib/prosody" }
--   modules_enabled = { ..., "gallery_discovery" }
--   gallery_url = "https://files.example.org"   -- gallery's server.public_url
--
-- The advertised value is gallery_url without trailing slashes, followed by "/api/" (the apps
-- append "v1/files/..." to it). Without a valid gallery_url the module logs an error and
-- advertises nothing. Written for Prosody 0.12; MIT licensed, like Prosody.

local dataforms = require "util.dataforms";

local FORM_TYPE = "urn:xabber:http:url";
local FIELD = "urn:xabber:http:url:mediagallery";

local base = module:get_option_string("gallery_url");
if base == nil or base == "" then
	module:log("error", "gallery_url is not set: no gallery is advertised on %s", module.host);
	return;
end
base = base:gsub("/+$", "");
if not (base:match("^https?://[^/%s]+") and not base:match("%s")) then
	module:log("error", "gallery_url must be an http(s) URL, got %q: no gallery is advertised on %s", base, module.host);
	return;
end
local api = base .. "/api/";

module:depends("disco");

local layout = dataforms.new {
	{ name = "FORM_TYPE", type = "hidden", value = FORM_TYPE };
	{ name = FIELD, type = "text-single" };
};

module:add_extension(layout:form({ [FIELD] = api }, "result"));
module:log("info", "advertising the gallery at %s", api);
