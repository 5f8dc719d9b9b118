# make package: ikto_VERSION_ARCH.deb and ikto_VERSION_linux_ARCH.tar.gz in
# dist/out/, built from one staged tree (dist/out/root) so both carry the same
# files:
#
#   /usr/bin/ikto-agent, ikto-init, ikto-admin
#   /usr/lib/ikto/ikto-hook-route, -firewall, -exec
#   /usr/lib/systemd/system/ikto-agent.service    (dist/systemd, ExecStart in /usr/bin)
#   /usr/lib/systemd/system/ikto-agent@.service   (one agent per mesh: /etc/ikto/%i.json, /run/ikto/%i.sock)
#   /etc/ikto/                                    (0700, empty: the configurations are the operator's)
#   /usr/share/man/man1/*.1.gz, bash/zsh/fish completions (written by the binaries themselves)
#   /usr/share/doc/ikto/README.md, CHANGELOG.md, docs/*.md, copyright (LICENSE)
#
# The .deb's scripts only reload systemd: installing never enables or starts an
# agent, removing never stops one (dist/package/*.sh say why). The tarball is
# for hosts without dpkg: tar -C / --no-overwrite-dir -xzf ikto_*.tar.gz, then
# systemctl daemon-reload. nfpm is pinned in tools/go.mod and built into
# bin/tools; the version is the binaries' (VERSION, from mk/version.sh) in
# Debian's form: make package VERSION=1.2.3 outside a checkout.

PKG_OUT     := $(CURDIR)/dist/out
PKG_ROOT    := $(PKG_OUT)/root
PKG_DOCS    := $(PKG_OUT)/docs
PKG_VERSION  = $(shell mk/version.sh --deb '$(VERSION)')
PKG_ARCH    ?= $(shell $(GO) env GOARCH)
# File times and man page dates come from the commit, so that two builds of
# one commit are the same bytes.
PKG_EPOCH    = $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
NFPM        := $(BIN)/tools/nfpm
UNITS       := $(PKG_ROOT)/usr/lib/systemd/system
SHARE_DOC   := $(PKG_ROOT)/usr/share/doc/ikto

.PHONY: package package-root nfpm

package: package-root nfpm
	@rm -f $(PKG_OUT)/ikto_*.deb $(PKG_OUT)/ikto_*.tar.gz
	IKTO_PKG_ROOT=$(PKG_ROOT) IKTO_PKG_VERSION=$(PKG_VERSION) IKTO_PKG_ARCH=$(PKG_ARCH) SOURCE_DATE_EPOCH=$(PKG_EPOCH) \
		$(NFPM) package --config dist/package/nfpm.yaml --packager deb --target $(PKG_OUT)/
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(PKG_EPOCH) -C $(PKG_ROOT) -cf - etc usr \
		| gzip -9n > $(PKG_OUT)/ikto_$(PKG_VERSION)_linux_$(PKG_ARCH).tar.gz
	@ls -l $(PKG_OUT)/ikto_*

nfpm:
	@mkdir -p $(BIN)/tools
	cd tools && GOWORK=off $(GO) build -trimpath -o $(NFPM) github.com/goreleaser/nfpm/v2/cmd/nfpm

# package-root stages the package's tree in $(PKG_ROOT), from scratch.
package-root: build
	rm -rf $(PKG_ROOT) $(PKG_DOCS)
	@# The binaries write their own man pages and completions (--generate-docs).
	@for c in $(CMDS); do \
		SOURCE_DATE_EPOCH=$(PKG_EPOCH) $(BIN)/$$c --generate-docs $(PKG_DOCS) || exit 1; \
	done
	install -d -m 0755 $(PKG_ROOT)/usr/bin $(PKG_ROOT)/usr/lib/ikto $(UNITS) \
		$(PKG_ROOT)/usr/share/man/man1 $(PKG_ROOT)/usr/share/bash-completion/completions \
		$(PKG_ROOT)/usr/share/zsh/vendor-completions $(PKG_ROOT)/usr/share/fish/vendor_completions.d
	install -d -m 0700 $(PKG_ROOT)/etc/ikto
	install -m 0755 $(addprefix $(BIN)/,$(CMDS)) $(PKG_ROOT)/usr/bin/
	install -m 0755 $(addprefix $(BIN)/ikto-hook-,$(HOOKS)) $(PKG_ROOT)/usr/lib/ikto/
	sed 's#/usr/local/bin/#/usr/bin/#' dist/systemd/ikto-agent.service > $(UNITS)/ikto-agent.service
	sed -e 's#/usr/local/bin/#/usr/bin/#' -e 's#/etc/ikto/ikto\.json#/etc/ikto/%i.json#' \
		-e 's#/run/ikto/ikto\.sock#/run/ikto/%i.sock#' -e 's#^Description=.*#& for mesh %i#' \
		-e '1i # ikto-agent@NAME.service: one agent per mesh on this host, with the config\n# /etc/ikto/NAME.json and the admin socket /run/ikto/NAME.sock (ikto-admin\n# status -s /run/ikto/NAME.sock). Give each mesh its own wg_dev_name, wg_port\n# and state_dir.' \
		dist/systemd/ikto-agent.service > $(UNITS)/ikto-agent@.service
	@# A unit whose paths the seds did not rewrite must not ship.
	grep -q '^ExecStart=/usr/bin/ikto-agent -c /etc/ikto/ikto.json ' $(UNITS)/ikto-agent.service
	grep -q '^ExecStart=/usr/bin/ikto-agent -c /etc/ikto/%i.json -s /run/ikto/%i.sock' $(UNITS)/ikto-agent@.service
	chmod 0644 $(UNITS)/*.service
	install -m 0644 $(PKG_DOCS)/man/*.1 $(PKG_ROOT)/usr/share/man/man1/
	gzip -9n $(PKG_ROOT)/usr/share/man/man1/*.1
	install -m 0644 $(PKG_DOCS)/bash/* $(PKG_ROOT)/usr/share/bash-completion/completions/
	install -m 0644 $(PKG_DOCS)/zsh/* $(PKG_ROOT)/usr/share/zsh/vendor-completions/
	install -m 0644 $(PKG_DOCS)/fish/* $(PKG_ROOT)/usr/share/fish/vendor_completions.d/
	@# The documentation as the repository has it, so that README's links
	@# to docs/ resolve; the license as Debian names it.
	install -d -m 0755 $(SHARE_DOC)/docs
	install -m 0644 README.md CHANGELOG.md $(SHARE_DOC)/
	install -m 0644 docs/*.md $(SHARE_DOC)/docs/
	install -m 0644 LICENSE $(SHARE_DOC)/copyright
	find $(PKG_ROOT) -exec touch -h -d @$(PKG_EPOCH) {} +

# make clean also removes the packages and their staged tree.
.PHONY: package-clean
clean: package-clean
package-clean:
	rm -rf $(PKG_OUT)
