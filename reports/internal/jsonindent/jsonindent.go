// Package jsonindent indents JSON that encoding/json wrote compact, as json.Indent would,
// without running encoding/json's syntax scanner over every byte: the reports' travelers and
// the QA export's manifest, which are written compact, then indented for people.
package jsonindent

// Append appends src, JSON as json.Marshal writes it (no space outside strings),
// indented as json.Indent(dst, src, "", indent) indents it: json.MarshalIndent's output.
// encoding/json runs its syntax scanner over every byte to indent, which Marshal's output
// does not need (TestAppend and FuzzAppend hold the two together).
func Append(dst, src []byte, indent string) []byte {
	newline := func(depth int) {
		dst = append(dst, '\n')
		for range depth {
			dst = append(dst, indent...)
		}
	}
	depth, needIndent, inString := 0, false, false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if inString {
			// Copy the string up to its closing quote (a backslash escapes the next byte).
			j := i
			for j < len(src) && src[j] != '"' {
				if src[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j, len(src)-1)
			dst = append(dst, src[i:j+1]...)
			i, inString = j, false
			continue
		}
		if needIndent && c != '}' && c != ']' {
			needIndent = false
			depth++
			newline(depth)
		}
		switch c {
		case '"':
			inString = true
			dst = append(dst, c)
		case '{', '[':
			needIndent = true // an empty object or array stays {} or []
			dst = append(dst, c)
		case ',':
			dst = append(dst, c)
			newline(depth)
		case ':':
			dst = append(dst, c, ' ')
		case '}', ']':
			if needIndent {
				needIndent = false
			} else {
				depth--
				newline(depth)
			}
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
