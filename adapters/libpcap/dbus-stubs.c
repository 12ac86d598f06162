/*
 * libpcap's D-Bus capture source, replaced for a static link.
 *
 * libpcap lists its capture sources in one table (pcap.c), so linking pcap_compile pulls in
 * every source, and Debian's D-Bus source needs libdbus and libsystemd, which have no static
 * archive. The service only compiles filters and never lists or opens a device, so these two
 * functions stand in for pcap-dbus.o: no D-Bus device exists.
 */
#include <stddef.h>

struct pcap;
struct pcap_if_list;

int dbus_findalldevs(struct pcap_if_list *devlistp, char *errbuf)
{
	(void)devlistp;
	(void)errbuf;
	return 0;
}

struct pcap *dbus_create(const char *device, char *ebuf, int *is_ours)
{
	(void)device;
	(void)ebuf;
	*is_ours = 0;
	return NULL;
}
