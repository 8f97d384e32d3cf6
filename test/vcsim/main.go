// Command vcsim-esx runs govmomi's simulator.ESX() model (one standalone ESXi host) on a given
// loopback port, prints a single JSON line with its URL on stdout, and stays up until SIGINT or
// SIGTERM, when it removes the model's temporary datastore directories.
//
// One process is one host: the simulator's object registry is process-global, so two models in
// one process would cross-wire. Built against Debian's golang-github-vmware-govmomi-dev (0.24).
package main

import (
	"crypto/sha1"
	"crypto/tls"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (host:port)")
	useTLS := flag.Bool("tls", false, "serve https with the simulator's self-signed certificate")
	user := flag.String("user", "", "required user name (any non-empty credentials log in when empty)")
	pass := flag.String("pass", "", "required password (only with -user)")
	flag.Parse()

	model := simulator.ESX()
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim-esx: create model: %v", err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen}
	if *user != "" {
		// With credentials in the listen URL the session manager accepts only those.
		model.Service.Listen.User = url.UserPassword(*user, *pass)
	}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	defer server.Close()

	out := map[string]string{"url": server.URL.String()}
	out["url"] = (&url.URL{Scheme: server.URL.Scheme, Host: server.URL.Host, Path: server.URL.Path}).String()
	if *useTLS {
		der := server.Certificate().Raw
		out["sha256"] = fmt.Sprintf("%X", sha256.Sum256(der))
		out["sha1"] = fmt.Sprintf("%X", sha1.Sum(der))
	}
	line, _ := json.Marshal(out)
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
