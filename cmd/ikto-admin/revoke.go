package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ikto-mesh/ikto/pkg/atomicfile"
	"github.com/ikto-mesh/ikto/pkg/bucket"
	"github.com/ikto-mesh/ikto/pkg/cli"
	"github.com/ikto-mesh/ikto/pkg/config"
	"github.com/ikto-mesh/ikto/pkg/enroll"
)

// revokeFlags say which NATS user to revoke and how: revoking a user is an
// entry in its account's JWT, which only the operator's key can sign, and
// which takes effect when the servers get the new JWT.
type revokeFlags struct {
	user         string // a U… public key, or the host's .creds file
	operatorSeed string
	accountJWT   string
	systemCreds  string
}

func (r *revokeFlags) bind(fs *pflag.FlagSet, userFlag bool) {
	if userFlag {
		fs.StringVar(&r.user, "user", "", "the enrolled host's NATS user: its .creds `FILE` from ikto-admin enroll, or its public nkey (U…)")
	}
	fs.StringVar(&r.operatorSeed, "operator-seed", "", "the NATS operator's nkey seed `FILE` (or the signing key that issued the account), to sign the revocation")
	fs.StringVar(&r.accountJWT, "account-jwt", "", "the account's current JWT `FILE`; the revocation is added to it in place")
	fs.StringVar(&r.systemCreds, "system-creds", "", "a system account user's .creds `FILE`, to push the new account JWT to the servers")
}

func (r *revokeFlags) check() error {
	switch {
	case r.user == "" && (r.operatorSeed != "" || r.accountJWT != "" || r.systemCreds != ""):
		return cli.Usagef("--operator-seed, --account-jwt and --system-creds revoke a NATS user: give it with --user")
	case (r.operatorSeed == "") != (r.accountJWT == ""):
		return cli.Usagef("--operator-seed and --account-jwt go together: the revocation is signed into the account JWT")
	case r.systemCreds != "" && r.operatorSeed == "":
		return cli.Usagef("--system-creds pushes a revocation: give --operator-seed and --account-jwt too")
	}
	return nil
}

// natsUser is the user to revoke: its key and, when it came from its
// .creds file, the host it was made for.
type natsUser struct {
	key, name, account string
	publish            []string
	fromFile           bool
}

// readUser reads --user: a public user nkey, or a .creds or JWT file.
func readUser(arg string) (natsUser, error) {
	if nkeys.IsValidPublicUserKey(arg) {
		return natsUser{key: arg}, nil
	}
	data, err := os.ReadFile(arg)
	if err != nil {
		return natsUser{}, cli.Usagef("--user %q is neither a NATS user public nkey (U…) nor a readable .creds file: %v", arg, err)
	}
	uc, _, err := enroll.ReadCreds(data)
	if err != nil {
		return natsUser{}, fmt.Errorf("--user %s: %w", arg, err)
	}
	account := uc.Issuer
	if uc.IssuerAccount != "" { // signed with one of the account's signing keys
		account = uc.IssuerAccount
	}
	return natsUser{key: uc.Subject, name: uc.Name, account: account, publish: uc.Pub.Allow, fromFile: true}, nil
}

// checkHost fails when u came from a .creds file whose JWT may not write
// the record key of bucket: the operator named another host's user (or an
// unrestricted one). A user given by its key alone cannot be checked.
func (u natsUser) checkHost(bucketName, key, host string) error {
	subject := "$KV." + bucketName + "." + key
	if !u.fromFile || (len(u.publish) > 0 && enroll.Allows(u.publish, subject)) {
		return nil
	}
	if len(u.publish) == 0 {
		return fmt.Errorf("--user: NATS user %s (%s) may publish anywhere: it is not an enrolled host's user; refusing to revoke it", u.key, dash(u.name))
	}
	return fmt.Errorf("--user: NATS user %s (%s) is not the user of %s: it may not write %s", u.key, dash(u.name), host, subject)
}

func (a *app) revokeUserCommand() *cobra.Command {
	var r revokeFlags
	cmd := &cobra.Command{
		Use:   "revoke-user <user.creds|UPUB> [--operator-seed FILE --account-jwt FILE [--system-creds FILE]]",
		Short: "Revoke an enrolled host's NATS user in the account JWT, or say how",
		Long: `revoke-user adds the NATS user to its account's revocation list, so the
servers refuse it and close its connections. The account JWT is signed by
the operator: give the operator's seed and the account's JWT file (updated in
place), and a system account user's creds to push it to servers that accept
account updates (resolver: full, or MEMORY until a restart). Without them it
prints the nsc commands that do the same. ikto-admin evict --user does this
too, after evicting the host's record.`,
		Args: exactArgs(1, "one user (its .creds file or public nkey)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.user = args[0]
			if err := r.check(); err != nil {
				return err
			}
			u, err := readUser(r.user)
			if err != nil {
				return err
			}
			ctx, cancel := a.withTimeout(cmd.Context())
			defer cancel()
			return a.revokeUser(ctx, cmd, r, u)
		},
	}
	r.bind(cmd.Flags(), false)
	return cmd
}

// revokeUser revokes u with the flags' keys, or prints how to.
func (a *app) revokeUser(ctx context.Context, cmd *cobra.Command, r revokeFlags, u natsUser) error {
	if r.operatorSeed == "" {
		a.printRevokeHowTo(u)
		return nil
	}
	signer, err := readSeedFile(r.operatorSeed, nkeys.PrefixByteOperator, "--operator-seed")
	if err != nil {
		return err
	}
	defer signer.Wipe()
	old, err := os.ReadFile(r.accountJWT)
	if err != nil {
		return fmt.Errorf("--account-jwt: %w", err)
	}
	token, err := enroll.RevokeUser(strings.TrimSpace(string(old)), signer, u.key, a.now())
	if err != nil {
		return fmt.Errorf("--account-jwt %s: %w", r.accountJWT, err)
	}
	if err := replaceKeepingMode(r.accountJWT, []byte(token+"\n")); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "revoked NATS user %s in %s\n", u.key, r.accountJWT)
	if r.systemCreds == "" {
		fmt.Fprintf(a.stdout, "the servers refuse it once they have the new account JWT: push it (nsc push, or --system-creds), or put it in resolver_preload and reload\n")
		return nil
	}
	return a.pushAccount(ctx, cmd, r.systemCreds, token)
}

func (a *app) printRevokeHowTo(u natsUser) {
	account := "<account>"
	if u.account != "" {
		account = u.account
	}
	fmt.Fprintf(a.stdout, `NATS user %s can still connect: revoke it in the account JWT, with nsc:
  nsc revocations add-user --account %s --user-public-key %s && nsc push --account %s
or with ikto-admin and the operator's seed:
  ikto-admin revoke-user %s --operator-seed OPERATOR.nk --account-jwt ACCOUNT.jwt --system-creds SYS.creds
`, u.key, account, u.key, account, u.key)
}

// pushAccount sends the account JWT to the servers as a system account user
// ($SYS.REQ.ACCOUNT.<account>.CLAIMS.UPDATE, which nats-server answers with
// resolver full and MEMORY alike), and checks the answer.
func (a *app) pushAccount(ctx context.Context, cmd *cobra.Command, systemCreds, token string) error {
	if err := a.loadConfig(cmd); err != nil {
		return err
	}
	acc, err := enroll.AccountKey(token)
	if err != nil {
		return err
	}
	settings := config.NATS{URLs: config.SplitURLs(a.natsURL), Creds: systemCreds, TLSCA: a.tlsCA, TLSCert: a.tlsCert, TLSKey: a.tlsKey}
	if len(settings.URLs) == 0 {
		return cli.Usagef("--system-creds pushes to a server: pass --nats-url too")
	}
	conn, err := bucket.Dial(settings, bucket.Client{Name: "ikto-admin", Timeout: a.timeout})
	if err != nil {
		return fmt.Errorf("push the account JWT: %w", err)
	}
	defer conn.Close()
	subject := "$SYS.REQ.ACCOUNT." + acc + ".CLAIMS.UPDATE"
	msg, err := conn.NC.RequestWithContext(ctx, subject, []byte(token))
	if err != nil {
		return fmt.Errorf("push the account JWT to %s on %s: %w; is --system-creds a user of the system account?", subject, conn.Servers, conn.Explain(err))
	}
	var resp struct {
		Data  *struct{ Message string } `json:"data"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || (resp.Data == nil && resp.Error == nil) {
		return fmt.Errorf("push the account JWT to %s: unexpected answer %q", conn.Servers, msg.Data)
	}
	if resp.Error != nil {
		return fmt.Errorf("push the account JWT to %s: the server refused it: %s", conn.Servers, resp.Error.Description)
	}
	fmt.Fprintf(a.stdout, "pushed account %s to %s: %s\n", acc, conn.Servers, resp.Data.Message)
	return nil
}

// replaceKeepingMode replaces path atomically with data, keeping its mode.
func replaceKeepingMode(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.Write(path, data, st.Mode().Perm()) // its error names path
}
