package peer

import "encoding/base64"

func encode(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }
