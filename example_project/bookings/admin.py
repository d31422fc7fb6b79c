from django.contrib import admin

from .models import Apartment, Booking, Tenant


@admin.register(Apartment)
class ApartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "address"]
    search_fields = ["name", "address"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "phone"]
    search_fields = ["name", "phone"]


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    list_display = ["tenant", "tenant_phone", "apartment", "start_date", "end_date"]
    list_filter = ["apartment"]
    list_select_related = ["tenant", "apartment"]
    search_fields = ["tenant__name", "tenant__phone", "apartment__name"]
    date_hierarchy = "start_date"
    autocomplete_fields = ["tenant", "apartment"]

    @admin.display(description="phone", ordering="tenant__phone")
    def tenant_phone(self, booking: Booking) -> str:
        return booking.tenant.phone
