package config

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// CheckAzureIoTIdentity checks an Azure IoT Identity Service configuration (the config.toml
// that `aziotctl config apply` reads) against the schema of the service's super-config, as
// Azure/iot-identity-service 1.x defines it: every key known, every required key present,
// every value of its type, and the variants chosen by `source` and `method` complete. It
// returns every problem found, each naming the key's path; none means the file passes.
//
// It is stricter than the service in one way: unknown keys are errors (the service ignores
// them, so a misspelt key would silently do nothing on the unit).
func CheckAzureIoTIdentity(data []byte) []string {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return []string{fmt.Sprintf("not TOML: %v", err)}
	}
	var c schemaCheck
	aziotRoot.check(&c, "", doc)
	checkPKCS11(&c, doc)
	sort.Strings(c.problems)
	return c.problems
}

// checkPKCS11 checks the PKCS#11 URIs: the Keys Service reads the PIN from pin-value only (a
// pin-source is ignored), and reaches a token only through [aziot_keys] pkcs11_lib_path.
func checkPKCS11(c *schemaCheck, doc map[string]any) {
	var uris []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case string:
			if strings.HasPrefix(x, "pkcs11:") {
				uris = append(uris, path)
				if strings.Contains(x, "pin-source=") {
					c.addf(path, "the Keys Service ignores pin-source; the PIN must be a pin-value")
				}
			}
		case map[string]any:
			for k, y := range x {
				walk(join(path, k), y)
			}
		case []any:
			for i, y := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), y)
			}
		}
	}
	walk("", doc)
	keys, _ := doc["aziot_keys"].(map[string]any)
	if _, ok := keys["pkcs11_lib_path"]; len(uris) > 0 && !ok {
		sort.Strings(uris)
		c.addf("aziot_keys.pkcs11_lib_path", "missing, but %s is a PKCS#11 URI", strings.Join(uris, ", "))
	}
}

type schemaCheck struct{ problems []string }

func (c *schemaCheck) addf(path, format string, args ...any) {
	if path == "" {
		path = "(top level)"
	}
	c.problems = append(c.problems, path+": "+fmt.Sprintf(format, args...))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// schema is one node of the schema.
type schema interface {
	check(c *schemaCheck, path string, v any)
}

// str is a string; uri requires an absolute URI, https an https URL.
type str struct{ uri, https bool }

func (s str) check(c *schemaCheck, path string, v any) {
	x, ok := v.(string)
	if !ok {
		c.addf(path, "want a string, have %T", v)
		return
	}
	if s.uri || s.https {
		u, err := url.Parse(x)
		switch {
		case err != nil || u.Scheme == "":
			c.addf(path, "%q is not an absolute URI", x)
		case s.https && u.Scheme != "https":
			c.addf(path, "%q is not an https URL", x)
		}
	}
}

// integer is a non-negative integer.
type integer struct{}

func (integer) check(c *schemaCheck, path string, v any) {
	if n, ok := v.(int64); !ok || n < 0 {
		c.addf(path, "want a non-negative integer, have %v", v)
	}
}

type boolean struct{}

func (boolean) check(c *schemaCheck, path string, v any) {
	if _, ok := v.(bool); !ok {
		c.addf(path, "want true or false, have %v", v)
	}
}

// list is an array of elem.
type list struct{ elem schema }

func (l list) check(c *schemaCheck, path string, v any) {
	xs, ok := v.([]any)
	if !ok {
		c.addf(path, "want an array, have %T", v)
		return
	}
	for i, x := range xs {
		l.elem.check(c, fmt.Sprintf("%s[%d]", path, i), x)
	}
}

// mapOf is a table whose keys are free and whose values are elem.
type mapOf struct{ elem schema }

func (m mapOf) check(c *schemaCheck, path string, v any) {
	t, ok := v.(map[string]any)
	if !ok {
		c.addf(path, "want a table, have %T", v)
		return
	}
	for k, x := range t {
		m.elem.check(c, join(path, k), x)
	}
}

// field is a key of a table.
type field struct {
	s        schema
	required bool
}

func req(s schema) field { return field{s: s, required: true} }
func opt(s schema) field { return field{s: s} }

// table has exactly the listed keys (the required ones present); together lists groups of
// keys that must appear all or none.
type table struct {
	fields   map[string]field
	together [][]string
}

func (t table) check(c *schemaCheck, path string, v any) {
	m, ok := v.(map[string]any)
	if !ok {
		c.addf(path, "want a table, have %T", v)
		return
	}
	t.checkKeys(c, path, m, nil)
}

// checkKeys checks m's keys against t, ignoring the keys in skip (a variant's tag).
func (t table) checkKeys(c *schemaCheck, path string, m map[string]any, skip []string) {
	for k, x := range m {
		if slices.Contains(skip, k) {
			continue
		}
		f, ok := t.fields[k]
		if !ok {
			c.addf(join(path, k), "unknown key")
			continue
		}
		f.s.check(c, join(path, k), x)
	}
	for k, f := range t.fields {
		if _, ok := m[k]; f.required && !ok {
			c.addf(join(path, k), "missing")
		}
	}
	for _, group := range t.together {
		n := 0
		for _, k := range group {
			if _, ok := m[k]; ok {
				n++
			}
		}
		if n != 0 && n != len(group) {
			c.addf(path, "%s go together", strings.Join(group, ", "))
		}
	}
}

// tagged is a table whose variant the string value of tag chooses.
type tagged struct {
	tag      string
	variants map[string]table
}

func (t tagged) check(c *schemaCheck, path string, v any) {
	m, ok := v.(map[string]any)
	if !ok {
		c.addf(path, "want a table, have %T", v)
		return
	}
	name, _ := m[t.tag].(string)
	variant, ok := t.variants[name]
	if !ok {
		names := make([]string, 0, len(t.variants))
		for n := range t.variants {
			names = append(names, fmt.Sprintf("%q", n))
		}
		sort.Strings(names)
		if _, present := m[t.tag]; !present {
			c.addf(join(path, t.tag), "missing; want one of %s", strings.Join(names, ", "))
		} else {
			c.addf(join(path, t.tag), "%v: want one of %s", m[t.tag], strings.Join(names, ", "))
		}
		return
	}
	variant.checkKeys(c, path, m, []string{t.tag})
}

// either is the first alternative that checks clean (an untagged variant); when none does,
// the problems of the one with the fewest are reported.
type either []schema

func (e either) check(c *schemaCheck, path string, v any) {
	var best []string
	for i, s := range e {
		var sub schemaCheck
		s.check(&sub, path, v)
		if len(sub.problems) == 0 {
			return
		}
		if i == 0 || len(sub.problems) < len(best) {
			best = sub.problems
		}
	}
	c.problems = append(c.problems, best...)
}

// with returns t's fields plus more (serde's flatten).
func with(t map[string]field, more map[string]field) map[string]field {
	out := make(map[string]field, len(t)+len(more))
	for k, f := range t {
		out[k] = f
	}
	for k, f := range more {
		out[k] = f
	}
	return out
}

// The Identity Service's super-config (aziotctl-common src/config/super_config.rs).
var (
	uri   = str{uri: true}
	https = str{https: true}

	// keyLocation is a preloaded key: a file:// or pkcs11: URI.
	keyLocation = uri

	autoRenew = table{fields: map[string]field{
		"rotate_key": req(boolean{}), "threshold": req(str{}), "retry": req(str{}),
	}}

	// estAuthFields are EstAuth's keys, flattened into their parent.
	estAuthFields = map[string]field{
		"username": opt(str{}), "password": opt(str{}),
		"bootstrap_identity_cert": opt(uri), "bootstrap_identity_pk": opt(keyLocation),
		"identity_cert": opt(uri), "identity_pk": opt(keyLocation),
	}
	estAuthTogether = [][]string{{"username", "password"}, {"bootstrap_identity_cert", "bootstrap_identity_pk"}, {"identity_cert", "identity_pk"}}

	// issuanceCommon are CertIssuanceOptions' keys besides the method.
	issuanceCommon = map[string]field{
		"expiry_days": opt(integer{}), "auto_renew": opt(autoRenew),
		"common_name": opt(str{}), "subject": opt(mapOf{str{}}),
	}

	// certIssuance is CertIssuanceOptions: a dynamically issued certificate.
	certIssuance = tagged{tag: "method", variants: map[string]table{
		"est": {fields: with(issuanceCommon, with(estAuthFields, map[string]field{"url": opt(uri)})),
			together: estAuthTogether},
		"local_ca":    {fields: issuanceCommon},
		"self_signed": {fields: issuanceCommon},
	}}

	// x509Identity is X509Identity, flattened: an issued certificate, or a preloaded one with
	// its key.
	x509Issued    = map[string]field{"identity_cert": req(certIssuance)}
	x509Preloaded = map[string]field{"identity_cert": req(uri), "identity_pk": req(keyLocation)}

	symmetricKey = either{
		table{fields: map[string]field{"value": req(str{})}},
		table{fields: map[string]field{"uri": req(keyLocation)}},
	}

	manualAuth = tagged{tag: "method", variants: map[string]table{
		"sas": {fields: map[string]field{"device_id_pk": req(symmetricKey)}},
	}}

	dpsAttestation = either{
		tagged{tag: "method", variants: map[string]table{
			"symmetric_key": {fields: map[string]field{"registration_id": req(str{}), "symmetric_key": req(symmetricKey)}},
			"x509":          {fields: with(x509Issued, map[string]field{"registration_id": opt(str{})})},
			"tpm":           {fields: map[string]field{"registration_id": req(str{})}},
		}},
		tagged{tag: "method", variants: map[string]table{
			"x509": {fields: with(x509Preloaded, map[string]field{"registration_id": opt(str{})})},
		}},
	}

	manualX509 = either{
		tagged{tag: "method", variants: map[string]table{"x509": {fields: x509Issued}}},
		tagged{tag: "method", variants: map[string]table{"x509": {fields: x509Preloaded}}},
	}

	provisioning = either{
		tagged{tag: "source", variants: map[string]table{
			"dps": {fields: map[string]field{
				"global_endpoint": req(uri), "id_scope": req(str{}), "attestation": req(dpsAttestation),
				"payload": opt(table{fields: map[string]field{"uri": req(uri)}}),
			}},
			"manual": {fields: map[string]field{"connection_string": req(str{})}},
			"none":   {fields: map[string]field{}},
		}},
		tagged{tag: "source", variants: map[string]table{
			"manual": {fields: map[string]field{
				"iothub_hostname": req(str{}), "device_id": req(str{}), "authentication": req(either{manualAuth, manualX509}),
			}},
		}},
	}

	est = table{fields: map[string]field{
		"trusted_certs": opt(list{uri}), "identity_auto_renew": opt(autoRenew),
		"auth": opt(table{fields: estAuthFields, together: estAuthTogether}), "urls": opt(mapOf{https}),
	}}

	localCA = either{
		table{fields: map[string]field{"cert": req(certIssuance)}},
		table{fields: map[string]field{"cert": req(uri), "pk": req(keyLocation)}},
	}

	aziotRoot = table{fields: map[string]field{
		"hostname": opt(str{}), "local_gateway_hostname": opt(str{}), "parent_hostname": opt(str{}),
		"cloud_timeout_sec": opt(integer{}), "cloud_retries": opt(integer{}),
		"aziot_max_requests": opt(table{fields: map[string]field{
			"keyd": req(integer{}), "certd": req(integer{}), "tpmd": req(integer{}), "identityd": req(integer{}),
		}}),
		"prefer_module_identity_cache": opt(boolean{}),
		"provisioning":                 req(provisioning),
		"localid":                      opt(table{fields: map[string]field{"domain": req(str{})}}),
		// The Keys Service's PKCS#11 settings; a PKCS#11 URI anywhere needs both.
		"aziot_keys": opt(table{fields: map[string]field{
			"pkcs11_lib_path": opt(str{}), "pkcs11_base_slot": opt(str{uri: true}),
		}, together: [][]string{{"pkcs11_lib_path", "pkcs11_base_slot"}}}),
		"preloaded_keys":  opt(mapOf{keyLocation}),
		"cert_issuance":   opt(table{fields: map[string]field{"est": opt(est), "local_ca": opt(localCA)}}),
		"preloaded_certs": opt(mapOf{either{uri, list{either{uri, str{}}}}}),
		"tpm": opt(table{fields: map[string]field{
			"tcti": opt(str{}), "auth_key_index": opt(str{}),
			"hierarchy_authorization": opt(table{fields: map[string]field{"endorsement": opt(str{}), "owner": opt(str{})}}),
		}}),
	}}
)
